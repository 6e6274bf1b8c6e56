"""Search strategies. ST-NAS: :mod:`stnas.search.stnas` (SGLD proxy in :mod:`stnas.search.proxy`,
evolution in :mod:`stnas.search.evolution`)."""
