"""What a new user ran into: one clear error before any work, one run per output folder, the exit code
of a SIGTERM, the CLI's --version and space list."""
import os
import signal
import subprocess
import sys

import pytest
import torch
from PIL import Image

from stnas.cli import main
from stnas.io import OutputError, OutputLock, save_checkpoint
from stnas.runtime import interrupt_guard
from stnas.spaces import builtin_spaces


def _folder(root, splits=("train", "val"), classes=10, n=4):
    for split in splits:
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (c * 20, i * 30, 0)).save(root / split / f"c{c}" / f"{i}.jpg")
    return root


def test_version_and_space_list(capsys):
    from stnas import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"stnas {__version__}"
    assert main(["space", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["name", "type"]
    assert sorted(line.split()[0] for line in lines[1:]) == builtin_spaces()


def test_a_second_run_into_the_same_folder_is_refused_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / OutputLock.NAME).write_text(f"{os.getpid()} {os.uname().nodename}\n")  # a live owner: this process
    assert main(["search", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "in use by another stnas run" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [OutputLock.NAME]  # nothing written before the refusal
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / OutputLock.NAME).write_text(f"{dead.stdout.strip()} {os.uname().nodename}\n")
    with OutputLock(out) as lock:
        assert lock.held and (out / OutputLock.NAME).read_text().split()[0] == str(os.getpid())
        with pytest.raises(OutputError, match="in use"):
            OutputLock(out).__enter__()
    assert not (out / OutputLock.NAME).exists()  # released


def test_an_output_path_that_is_a_file_is_one_error(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["search", "--out", str(tmp_path / "file"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err


def test_a_missing_val_split_is_reported_before_training(tmp_path, capsys):
    data = _folder(tmp_path / "d", splits=("train",))
    out = tmp_path / "o"
    assert main(["search", "--space", "demo", "--data", str(data), "--out", str(out), "--batch-size", "8",
                 "--no-progress", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "no 'val' split" in err and "Traceback" not in err
    assert not (out / "supernet.ckpt").exists()


def test_evaluate_with_an_empty_list_and_a_checkpoint_without_fields(tmp_path, capsys):
    from stnas.spaces import Space

    ckpt = save_checkpoint(tmp_path / "s.ckpt", {"space": Space.load("demo").to_dict()}, kind="supernet")
    (tmp_path / "archs.json").write_text("[]")
    assert main(["evaluate", "--checkpoint", str(ckpt), "--archs", str(tmp_path / "archs.json")]) == 2
    err = capsys.readouterr().err
    assert "lacks the field(s)" in err and "Traceback" not in err
    full = save_checkpoint(tmp_path / "f.ckpt", {"space": Space.load("demo").to_dict(), "config": {}, "model": {},
                                                 "snapshots": []}, kind="supernet")
    assert main(["evaluate", "--checkpoint", str(full), "--archs", str(tmp_path / "archs.json")]) == 2
    err = capsys.readouterr().err
    assert "holds no architecture" in err and "Traceback" not in err


def test_sigterm_becomes_an_interrupt_and_exit_code_143(monkeypatch, capsys):
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        with interrupt_guard():
            os.kill(os.getpid(), signal.SIGTERM)
    from stnas.cli import commands

    def interrupted(args):
        raise KeyboardInterrupt(f"signal {signal.SIGTERM.value}")

    monkeypatch.setitem(commands.HANDLERS, "space", interrupted)
    assert main(["space", "list"]) == 143
    monkeypatch.setitem(commands.HANDLERS, "space", lambda args: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(["space", "list"]) == 130
    assert "--resume" in capsys.readouterr().err


def test_truncated_checkpoint_message_keeps_whole_words(tmp_path):
    from stnas.io import CheckpointError, load_checkpoint

    good = save_checkpoint(tmp_path / "a.ckpt", {"x": torch.arange(10)}, kind="supernet")
    (tmp_path / "cut.ckpt").write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "cut.ckpt")
    text = str(e.value)
    assert text.endswith(")") and "truncated" in text
    assert "\n" not in text


def test_models_load_gives_back_every_kind_of_saved_network(tmp_path):
    from stnas import models
    from stnas.io import CheckpointError
    from stnas.spaces import Space
    from stnas.supernet import SuperNet, build
    from stnas.supernet.mixed import MixedCellNet

    x = torch.randn(2, 3, 32, 32)
    cell = Space.load("nb201-demo")
    arch = cell.arch_from_nb201("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    net = build(arch, cell).eval()
    save_checkpoint(tmp_path / "m.ckpt", {"space": cell.to_dict(), "arch": arch.to_dict(), "model": net.state_dict()},
                    kind="model")
    assert torch.equal(models.load(tmp_path / "m.ckpt")(x), net(x))
    mixed = MixedCellNet(cell, weighting="softmax", partial_channels=2)
    mixed.prune(3)
    save_checkpoint(tmp_path / "s.ckpt", {"space": cell.to_dict(), "model": mixed.state_dict(),
                                          "config": {"method": {"weighting": "softmax"}}}, kind="supernet")
    loaded = models.load(tmp_path / "s.ckpt")
    assert torch.equal(loaded.mask, mixed.mask) and torch.allclose(loaded(x), mixed.eval()(x))
    chain = Space.load("demo")
    sup = SuperNet(chain)
    save_checkpoint(tmp_path / "c.ckpt", {"space": chain.to_dict(), "model": sup.state_dict(), "snapshots": []},
                    kind="supernet")
    assert isinstance(models.load(tmp_path / "c.ckpt"), type(sup))
    save_checkpoint(tmp_path / "o.ckpt", {"x": 1}, kind="other")
    with pytest.raises(CheckpointError, match="not a model"):
        models.load(tmp_path / "o.ckpt")


def test_skipped_files_are_reported_once_however_many_loaders_read_the_split(tmp_path, caplog):
    from stnas.data import make_loader

    data = _folder(tmp_path / "d", classes=2)
    (data / "train" / "c0" / "broken.jpg").write_bytes(b"not a jpeg")
    with caplog.at_level("WARNING", logger="stnas.data"):
        for seed in (0, 1):
            make_loader(data, "train", batch_size=2, image_size=32, backend="pil", num_threads=1, seed=seed)
    assert sum("skipped 1 file" in r.getMessage() for r in caplog.records) == 1


def test_scores_csv_keeps_exact_scores_so_a_resumed_evolution_reads_the_same_floats(tmp_path):
    """A resumed search takes its cached scores from scores.csv; rounded ones (6 decimals, as written
    before) changed near-ties between architectures and with them the evolution's path."""
    import random

    from stnas.methods.stnas import ScoreTable
    from stnas.spaces import Space

    space = Space.load("demo")
    archs = list(dict.fromkeys(space.sample(random.Random(i)) for i in range(6)))
    accs = [[k / 355, (k + 1) / 355, 1 / 3] for k in range(len(archs))]
    table = ScoreTable(space, tmp_path / "scores.csv")
    table.add(archs, accs)
    again = ScoreTable(space, tmp_path / "scores.csv")
    assert again.rows == table.rows
    assert [again.score(a) for a in archs] == [table.score(a) for a in archs]


# ---------------------------------------------------------------------- silent mismatches (item 5), the CLI

def _demo_supernet_ckpt(path, snapshots: bool):
    from stnas.spaces import Space
    from stnas.supernet import SuperNet

    space = Space.load("demo")
    torch.manual_seed(0)
    weights = SuperNet(space).state_dict()
    return save_checkpoint(path, {"space": space.to_dict(), "config": {}, "model": weights,
                                  "snapshots": [weights] if snapshots else []}, kind="supernet")


def _arch_file(path, space_name: str):
    import json

    from stnas.spaces import Space

    arch = Space.load("demo").sample(__import__("random").Random(0))
    path.write_text(json.dumps({"space": space_name, "arch": arch.to_dict()}))
    return path


def test_an_architecture_file_of_another_space_is_refused_by_evaluate_export_and_retrain(tmp_path, capsys):
    """demo's architectures would fit a supernet of any space with the same edges and ops: the file's own
    'space' field decides, in one line, before any data is read."""
    ckpt = _demo_supernet_ckpt(tmp_path / "s.ckpt", snapshots=True)
    other = _arch_file(tmp_path / "other.json", "tas")
    for argv in (["evaluate", "--checkpoint", str(ckpt), "--archs", str(other)],
                 ["export", "--checkpoint", str(ckpt), "--arch", str(other), "--out", str(tmp_path / "m.pt")],
                 ["retrain", str(other), "--space", "demo", "--out", str(tmp_path / "rt")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "architecture of space 'tas'" in err and "'demo'" in err and "Traceback" not in err, err
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "rt" / "config.json").exists()


def test_export_without_snapshots_says_where_the_weights_come_from(tmp_path, capsys):
    ckpt = _demo_supernet_ckpt(tmp_path / "s.ckpt", snapshots=False)
    arch = _arch_file(tmp_path / "a.json", "demo")
    assert main(["export", "--checkpoint", str(ckpt), "--arch", str(arch), "--out", str(tmp_path / "m.pt"),
                 "--no-progress", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "final weights (no snapshots)" in out and "last snapshot" not in out, out


@pytest.mark.parametrize("argv, message", [
    (["--eval-images", "0"], "--eval-images: must be > 0, got 0"),
    (["--budget-madds", "-5M"], "--budget-madds: must be > 0, got -5M"),  # not taken for an option
    (["--budget-madds", "1e400"], "--budget-madds: must be a finite count, got 1e400"),
    (["--population", "0"], "--population: must be > 0"),
    (["--burn-in", "-1"], "--burn-in: must be >= 0"),
])
def test_bad_numbers_are_refused_by_the_parser_in_one_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["search", *argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def _refused_after_checks(out):
    """An --out whose checkpoint exists: a search logs its warnings, then is refused before training."""
    out.mkdir()
    (out / "supernet.ckpt").write_bytes(b"x")
    return out


def test_a_huge_sgld_temperature_is_warned_about(tmp_path, capsys):
    out = _refused_after_checks(tmp_path / "o")
    assert main(["search", "--temperature", "1e12", "--out", str(out), "--no-progress", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "--temperature 1e+12: the SGLD noise is" in err, err
    assert main(["search", "--out", str(out), "--no-progress", "--threads", "1"]) == 2  # the default: silent
    assert "SGLD noise" not in capsys.readouterr().err


def test_data_without_space_chooses_a_space_with_its_classes(tmp_path, capsys):
    data = _folder(tmp_path / "d", n=2)
    out = _refused_after_checks(tmp_path / "o")
    assert main(["search", "--data", str(data), "--out", str(out), "--batch-size", "8", "--no-progress",
                 "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "no --space: " in err and "built-in space 'demo'" in err and "exists: pass --resume" in err, err
    assert main(["search", "--space", "tas", "--data", str(data), "--out", str(out), "--batch-size", "8",
                 "--no-progress", "--threads", "1"]) == 2
    assert "pass --space demo or a space file with num_classes: 10" in capsys.readouterr().err
    three = _folder(tmp_path / "d3", classes=3, n=2)
    assert main(["search", "--data", str(three), "--out", str(out), "--no-progress"]) == 2
    assert "no built-in space classifies into 3" in capsys.readouterr().err


def test_every_option_of_search_and_retrain_says_its_default():
    """Flags and required options aside, an option's help names its default (timm/NNI habit)."""
    import argparse

    from stnas.cli import build_parser

    parser = build_parser("stnas")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for command in ("search", "retrain"):
        for action in sub.choices[command]._actions:
            if not action.option_strings or action.nargs == 0 or action.required:
                continue
            if "default" not in (action.help or ""):
                missing.append(f"{command} {action.option_strings[0]}")
    assert not missing, missing


def test_written_files_lists_everything_in_out(tmp_path):
    from stnas.io import written_files

    for name in ("b.json", "a.csv", ".stnas.lock"):
        (tmp_path / name).write_text("x")
    (tmp_path / "archs").mkdir()
    assert written_files(tmp_path) == "a.csv, archs/, b.json"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a folder nobody can write (/proc)")
def test_export_checks_its_output_before_the_work(tmp_path, capsys):
    ckpt = _demo_supernet_ckpt(tmp_path / "s.ckpt", snapshots=True)
    arch = _arch_file(tmp_path / "a.json", "demo")
    for out, message in (("/proc/model.pt", "cannot be written"), (str(tmp_path), "is a folder")):
        assert main(["export", "--checkpoint", str(ckpt), "--arch", str(arch), "--out", out]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and "recalibrat" not in err, err


@pytest.mark.parametrize("text, what", [("score,madds\n0.5,xx\n", "KeyError"),
                                        ('score,madds,params,snapshot_accuracies,arch\n0.1,3,4,"[0.1',
                                         "TypeError"),  # a cut row: no arch field
                                        ('score,madds,params,snapshot_accuracies,arch\n0.1,3,4,[0.1],"{}"\n',
                                         "line 2")])
def test_a_changed_scores_csv_is_one_error_naming_the_line(tmp_path, text, what):
    from stnas.io import CheckpointError
    from stnas.methods.stnas import ScoreTable
    from stnas.spaces import Space

    (tmp_path / "scores.csv").write_text(text)
    with pytest.raises(CheckpointError, match="scores.csv, line 2: not a score row") as e:
        ScoreTable(Space.load("demo"), tmp_path / "scores.csv")
    assert what in str(e.value) and "\n" not in str(e.value)
