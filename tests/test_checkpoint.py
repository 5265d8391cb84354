"""Checkpoints rebuild the exact codec, with its coding tables, and never unpickle objects."""

from __future__ import annotations

import os

import pytest
import torch

import lic
from lic.checkpoint import weights_fingerprint
from lic.errors import CheckpointError


def test_round_trip_restores_weights_tables_and_metadata(tiny_checkpoint) -> None:
    codec = lic.load_codec(tiny_checkpoint)
    assert not codec.training
    assert codec.metadata["lmbda"] == pytest.approx(0.013) and codec.metadata["metric"] == "mse"
    assert codec.fingerprint == weights_fingerprint(codec)
    payload = torch.load(tiny_checkpoint, weights_only=True)
    assert payload["codec"] == "student-tiny" and payload["fingerprint"] == codec.fingerprint
    table = codec.entropy_bottleneck._quantized_cdf
    assert table.numel() > 0 and torch.equal(
        table, payload["state_dict"]["entropy_bottleneck._quantized_cdf"]
    )
    x = torch.rand(1, 3, 40, 72)
    again = lic.load_codec(tiny_checkpoint)
    assert codec.compress(x).strings == again.compress(x).strings


def test_save_refreshes_stale_coding_tables(tmp_path) -> None:
    codec = lic.create_codec("student-tiny")
    codec.update(force=True)
    with torch.no_grad():
        codec.entropy_bottleneck.quantiles[:, :, 0] -= 5.0  # training widened the range...
    stale = codec.entropy_bottleneck._offset.clone()
    lic.save_codec(codec, tmp_path / "c.ckpt")  # ...so saving must rebuild the tables
    loaded = lic.load_codec(tmp_path / "c.ckpt")
    assert not torch.equal(loaded.entropy_bottleneck._offset, stale)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_objects_are_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    torch.save({"format": "lic-codec", "payload": _Exploit()}, path, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="refused"):
        lic.load_codec(path)
    assert not (tmp_path / "pwned").exists()


def test_tampered_weights_fail_the_fingerprint(tiny_checkpoint, tmp_path) -> None:
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["state_dict"]["g_s.3.bias"] += 1
    path = tmp_path / "tampered.ckpt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="fingerprint .* differs"):
        lic.load_codec(path)


def test_weights_for_another_shape_are_reported(tiny_checkpoint, tmp_path) -> None:
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["config"]["channels"] = 8
    path = tmp_path / "mismatch.ckpt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not fit codec 'student-tiny'"):
        lic.load_codec(path)


def test_what_differs_is_named_in_one_line(tiny_checkpoint, tmp_path) -> None:
    def refused(change, *fragments: str) -> None:
        payload = torch.load(tiny_checkpoint, weights_only=True)
        change(payload)
        path = tmp_path / "changed.ckpt"
        torch.save(payload, path)
        with pytest.raises(CheckpointError) as info:
            lic.load_codec(path)
        message = str(info.value)
        assert "\n" not in message and len(message) < 400, message
        for fragment in fragments:
            assert fragment in message, message

    refused(lambda p: p["state_dict"].pop("g_s.3.bias"), "missing g_s.3.bias")
    refused(lambda p: p["state_dict"].update(extra=torch.zeros(1)), "unexpected extra")
    refused(
        lambda p: p["state_dict"].update({"h_s.0.weight": torch.zeros(2, 2, 5, 5)}),
        "h_s.0.weight is (2, 2, 5, 5) in the checkpoint",
    )
    refused(lambda p: p.update(codec="student-huge"), "student-huge")
    teacher = lic.create_codec("teacher-tiny").codec_config
    refused(
        lambda p: p.update(codec="teacher-tiny", config=teacher),
        "do not fit codec 'teacher-tiny'",
        "missing",
    )
    refused(lambda p: p["config"].update(colour=True), "no argument(s) colour")


def test_not_a_checkpoint(tmp_path) -> None:
    path = tmp_path / "text.ckpt"
    path.write_text("hello")
    with pytest.raises(CheckpointError):
        lic.load_codec(path)
    with pytest.raises(CheckpointError, match="not found"):
        lic.load_codec(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "lightning.ckpt")
    with pytest.raises(CheckpointError, match="not a lic codec checkpoint"):
        lic.load_codec(tmp_path / "lightning.ckpt")


def test_checkpoints_of_an_older_lic_load_or_are_refused_in_one_line(
    tiny_checkpoint, tmp_path
) -> None:
    """What an older lic wrote loads where a migration is documented (``load_codec``), and is
    otherwise refused in one line naming what is missing."""
    reference = lic.load_codec(tiny_checkpoint)

    def older(change, source=tiny_checkpoint):
        payload = torch.load(source, weights_only=True)
        change(payload)
        path = tmp_path / f"older-{len(list(tmp_path.iterdir()))}.ckpt"
        torch.save(payload, path)
        return path

    codec = lic.load_codec(older(lambda p: p.pop("metadata")))
    assert codec.metadata == {} and codec.fingerprint == reference.fingerprint
    before_variable_rate = older(
        lambda p: [p["config"].pop(key) for key in ("rate_levels", "rate_range")]
    )
    codec = lic.load_codec(before_variable_rate)
    assert not codec.variable_rate and codec.codec_config == reference.codec_config
    assert codec.fingerprint == reference.fingerprint

    variable_rate = tmp_path / "vr.ckpt"
    lic.save_codec(lic.create_codec("student-tiny-vr"), variable_rate)
    without_gains = older(
        lambda p: [p["state_dict"].pop(k) for k in ("log_gain", "log_inverse_gain")],
        source=variable_rate,
    )
    for path, fragment in [
        (older(lambda p: p.pop("version")), "format version None is not supported"),
        (older(lambda p: p.update(version=0)), "format version 0 is not supported"),
        (older(lambda p: p.pop("fingerprint")), "lacks fingerprint"),
        (older(lambda p: p.pop("config")), "lacks config"),
        (without_gains, "missing log_gain, log_inverse_gain"),
    ]:
        with pytest.raises(CheckpointError) as info:
            lic.load_codec(path)
        message = str(info.value)
        assert "\n" not in message and fragment in message, message
