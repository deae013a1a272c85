"""Faults of the machine are not faults of the sample.

A full disk or an out-of-memory kill must fail the job (status 75, one line saying what to do)
so Snakemake retries it or stops; recording it as the sample's permanent "failed" result would
make the job count as successful and never be retried. A broken file still becomes a failed
record and the job still succeeds, so the rest of the batch carries on.
"""

from __future__ import annotations

import errno
import json

import pytest

from cytopipe import cli
from cytopipe.commands import sample as commands
from cytopipe.preprocess import sample as preprocessing
from cytopipe.synth.composition import blood_composition
from cytopipe.synth.sample_files import write_sample
from cytopipe.synth.simulate import simulate_sample


@pytest.fixture(scope="module")
def fcs(tmp_path_factory):
    path = tmp_path_factory.mktemp("fault") / "S1.fcs"
    return write_sample(path, simulate_sample(3000, blood_composition(), "A", 2))


def _preprocess(fcs, out):
    return cli.main(
        ["preprocess", str(fcs), "--sample-id", "S1", "--panel", "config/panel.yaml",
         "--out-events", str(out / "S1.parquet"), "--out-info", str(out / "S1.json")]
    )  # fmt: skip


def _raiser(exc):
    def raise_it(*args, **kwargs):
        raise exc

    return raise_it


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "results/S1.parquet"), "free disk space"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "raise the quota"),
        (PermissionError(errno.EACCES, "Permission denied", "results"), "give the workflow"),
        (MemoryError(), "more memory"),
    ],
)
def test_environment_fault_fails_the_job_without_a_failed_record(
    fcs, tmp_path, monkeypatch, capsys, repo, exc, words
):
    monkeypatch.chdir(repo)
    monkeypatch.setattr(commands, "write_parquet", _raiser(exc))
    assert _preprocess(fcs, tmp_path) == 75
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert "internal error" not in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "S1.json").exists()  # no "failed" record that would never rerun


def test_out_of_memory_while_reading_fails_the_job(fcs, tmp_path, monkeypatch, capsys, repo):
    monkeypatch.chdir(repo)
    monkeypatch.setattr(preprocessing, "read_fcs", _raiser(MemoryError()))
    assert _preprocess(fcs, tmp_path) == 75
    assert not (tmp_path / "S1.json").exists()


def test_a_broken_file_still_fails_only_its_sample(tmp_path, monkeypatch, repo):
    monkeypatch.chdir(repo)
    broken = tmp_path / "broken.fcs"
    broken.write_bytes(b"FCS3.1    " + b"\0" * 60)
    assert _preprocess(broken, tmp_path) == 0
    record = json.loads((tmp_path / "S1.json").read_text())
    assert record["status"] == "failed" and record["input_found"] is True
    assert str(broken) in record["error"]


def test_a_bug_on_one_file_is_recorded_and_the_batch_goes_on(fcs, tmp_path, monkeypatch, repo):
    monkeypatch.chdir(repo)
    monkeypatch.setattr(preprocessing.qc, "qc_sample", _raiser(ValueError("boom")))
    assert _preprocess(fcs, tmp_path) == 0
    record = json.loads((tmp_path / "S1.json").read_text())
    assert record["status"] == "failed" and "internal error" in record["error"]


@pytest.mark.parametrize(
    ("exc", "words"),
    [(PermissionError(errno.EACCES, "Permission denied"), "give the workflow's user access"),
     (OSError(errno.EIO, "Input/output error"), "check the storage")],
)  # fmt: skip
def test_a_file_that_cannot_be_opened_fails_the_job(
    fcs, tmp_path, monkeypatch, capsys, repo, exc, words
):
    """Unreadable (permissions) or an I/O error on a flaky share: not the file's fault, and
    a failed record would never be retried once the share or the permissions are fixed."""
    monkeypatch.chdir(repo)
    real_open = open

    def failing_open(path, *args, **kwargs):
        if str(path) == str(fcs):
            exc.filename = str(path)
            raise exc
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing_open)
    assert _preprocess(fcs, tmp_path) == 75
    err = capsys.readouterr().err
    assert words in err and str(fcs) in err
    assert not (tmp_path / "S1.json").exists()
