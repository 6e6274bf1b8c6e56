"""Detection tests need torchvision's compiled ops and pycocotools (requirements-detection.txt). Without
them the modules here skip, saying so; with STNAS_REQUIRE_DETECTION=1 (the CI job that installs them) a
missing requirement is an error instead, so that the job can never pass by skipping everything."""
import os

from stnas.detection import REQUIREMENTS, detection_missing

WHY = detection_missing()

if WHY is not None and os.environ.get("STNAS_REQUIRE_DETECTION") == "1":
    raise RuntimeError(f"STNAS_REQUIRE_DETECTION=1 but {WHY}; {REQUIREMENTS}")
