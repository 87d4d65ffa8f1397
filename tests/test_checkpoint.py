"""Checkpoints: router round trip, exact resume, clear errors on missing or corrupt files."""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import metarouter_jax as mr
from metarouter_jax import checkpoint
from metarouter_jax.checkpoint import CheckpointError, TrainCheckpointer
from metarouter_jax.config import Hparams
from metarouter_jax.training import make_train, run_training


def test_router_round_trip(trained_router, small_data, tmp_path):
    trained_router.save(tmp_path / "router")
    loaded = mr.MetaRouter.load(tmp_path / "router")
    ctx = mr.Contexts.from_feedback(small_data, [0, 1], [0, 1], [4, 3], [True, False], capacity=8)
    z = trained_router.adapt(ctx)
    np.testing.assert_array_equal(z, loaded.adapt(ctx))
    emb = small_data.embeddings[:50]
    np.testing.assert_array_equal(trained_router.route(z, emb), loaded.route(z, emb))
    assert loaded.config == trained_router.config and loaded.model_names == trained_router.model_names
    np.testing.assert_array_equal(loaded.atoms.scale, trained_router.atoms.scale)   # measured, not re-guessed
    best = loaded.best_valid_utility                                         # the training history travels too
    assert set(best) == {"known", "metarouter", "agnostic"} and best == trained_router.best_valid_utility
    assert best["metarouter"] == float(np.max(trained_router.history["metarouter"]["valid_utility"]))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".router")]   # no temp left behind
    r = trained_router                          # a Bradley-Terry head cannot run on unmeasured atoms
    with pytest.raises(ValueError, match="atom_scales"):
        mr.MetaRouter(r.config, r.hparams, r.net_config, r.profiles, r.params, dataclasses.replace(r.info, atom_scales=()))


def test_resume_is_bit_exact(small_data, tiny_config, tmp_path):
    config = tiny_config.replace(num_steps=80, chunk_steps=20, ema_decay=0.9)   # the parameter average resumes too
    trainer = make_train(config, small_data)
    hp = Hparams.create()
    key = jax.random.key(7)
    full, _ = run_training(trainer, key, hp)

    class Interrupt(Exception):
        pass

    def stop_after_two(index, num, metrics):
        if index == 1:
            raise Interrupt

    ckpt = TrainCheckpointer(tmp_path / "ck", every=20, keep=2)
    with pytest.raises(Interrupt):
        run_training(trainer, key, hp, on_chunk=stop_after_two, checkpointer=ckpt)
    assert ckpt.latest_step() == 40 and ckpt.all_steps() == [20, 40]
    resumed, history = run_training(trainer, key, hp, checkpointer=ckpt)
    assert ckpt.all_steps() == [60, 80]                    # keeps the last k
    ckpt.close()
    jax.tree.map(np.testing.assert_array_equal, (full.params, full.average, full.best_params, full.best_score),
                 (resumed.params, resumed.average, resumed.best_params, resumed.best_score))
    assert len(history["loss"]) == config.num_chunks

    # The directory is this run's: another seed, hyperparameter, config or start is refused
    # (resuming would mix two runs), before anything compiles.
    ckpt = TrainCheckpointer(tmp_path / "ck", every=20, keep=2)
    with pytest.raises(CheckpointError, match="another training run.*PRNG key"):
        run_training(trainer, jax.random.key(8), hp, checkpointer=ckpt)
    with pytest.raises(CheckpointError, match="hparams.learning_rate: 0.003.* saved, 0.1.* now"):
        run_training(trainer, key, Hparams.create(learning_rate=0.1), checkpointer=ckpt)
    other = make_train(config.replace(informative_fraction=0.25), small_data)   # same shapes
    with pytest.raises(CheckpointError, match="config.informative_fraction: 0.5 saved, 0.25 now"):
        run_training(other, key, hp, checkpointer=ckpt)
    with pytest.raises(CheckpointError, match="starting parameters differ"):
        run_training(trainer, key, hp, checkpointer=ckpt, init_params=full.params)
    ckpt.close()


def test_training_checkpoints_of_another_format_are_refused(tmp_path):
    """A square kernel and its transpose have the same shape: only the format marker tells."""
    state = {"kernel": np.arange(4.0).reshape(2, 2)}
    ckpt = TrainCheckpointer(tmp_path / "ck", every=1)
    ckpt.save(1, state)
    np.testing.assert_array_equal(ckpt.restore(state)["kernel"], state["kernel"])
    marker = tmp_path / "ck" / checkpoint.FORMAT_FILE
    assert json.loads(marker.read_text()) == {"format_version": checkpoint.FORMAT_VERSION,
                                              "digests": {"1": checkpoint.stored_digest({"00000": state["kernel"]})}}
    marker.write_text(json.dumps({"format_version": 2}))
    with pytest.raises(CheckpointError, match="format version 2.*another version"):
        ckpt.restore(state)
    with pytest.raises(CheckpointError, match="format version 2"):
        ckpt.save(2, state)                     # nor mixes new steps into an old directory
    marker.unlink()                             # written before the marker existed
    with pytest.raises(CheckpointError, match="format version None"):
        ckpt.restore(state)
    marker.write_text("{oops")
    with pytest.raises(CheckpointError, match="corrupt"):
        ckpt.restore(state)
    ckpt.close()


def test_saving_over_a_router_keeps_the_old_one_until_the_new_one_is_in_place(trained_router, tmp_path,
                                                                             monkeypatch):
    path = tmp_path / "router"
    trained_router.save(path)
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    real_replace, calls = checkpoint.os.replace, []

    def fail_second(src, dst):  # the move into place fails after the old router was moved aside
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", fail_second)
    with pytest.raises(OSError, match="disk full"):
        trained_router.save(path)
    monkeypatch.undo()
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before   # the old router, back in place
    assert [p.name for p in tmp_path.iterdir()] == ["router"]               # no temporary folders left
    mr.MetaRouter.load(path)
    trained_router.save(path)                                               # and a plain overwrite works
    assert [p.name for p in tmp_path.iterdir()] == ["router"]


def test_missing_and_corrupt_checkpoints(trained_router, small_data, tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        mr.MetaRouter.load(tmp_path / "nothing")
    trained_router.save(tmp_path / "r")
    (tmp_path / "r" / "router.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        mr.MetaRouter.load(tmp_path / "r")
    trained_router.save(tmp_path / "r2")
    shutil.rmtree(tmp_path / "r2" / "arrays")
    with pytest.raises(CheckpointError, match="missing"):
        mr.MetaRouter.load(tmp_path / "r2")
    trained_router.save(tmp_path / "r3")
    for f in (tmp_path / "r3" / "arrays").rglob("*"):
        if f.is_file() and f.stat().st_size > 100:
            f.write_bytes(b"\0" * 17)
    with pytest.raises(CheckpointError):
        mr.MetaRouter.load(tmp_path / "r3")
    trained_router.save(tmp_path / "r4")
    meta = json.loads((tmp_path / "r4" / "router.json").read_text())
    meta["network"]["hidden"] = 7
    (tmp_path / "r4" / "router.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"corrupt.*config and its network disagree on \['hidden'\]"):
        mr.MetaRouter.load(tmp_path / "r4")
    meta["config"]["hidden"] = 7                                   # agreeing, but not with the arrays
    (tmp_path / "r4" / "router.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="different configuration"):
        mr.MetaRouter.load(tmp_path / "r4")
    meta["history"]["metarouter"]["loss"][0] = "many"
    (tmp_path / "r4" / "router.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="router.json is corrupt.*could not convert string"):
        mr.MetaRouter.load(tmp_path / "r4")
    (tmp_path / "r4" / "router.json").write_bytes(b"\xff\xfe not text")
    with pytest.raises(CheckpointError, match="router.json is corrupt"):
        mr.MetaRouter.load(tmp_path / "r4")
    meta["network"]["hidden"] = meta["config"]["hidden"] = trained_router.net_config.hidden
    meta["history"]["metarouter"]["loss"][0] = 0.0
    meta["format_version"] = 1
    (tmp_path / "r4" / "router.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 1.*must be retrained"):
        mr.MetaRouter.load(tmp_path / "r4")


def test_a_killed_save_is_cleaned_up_and_its_router_found(trained_router, tmp_path):
    path = tmp_path / "router"
    trained_router.save(path)
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, host = int(done.stdout), socket.gethostname()
    # A save killed between moving the old router aside and moving the new one in: both folders stay.
    half_written = tmp_path / f".router.new.{host}.{dead}.abc"
    (half_written / "arrays").mkdir(parents=True)
    aside = tmp_path / f".router.old.{host}.{dead}.def"
    aside.mkdir()
    os.replace(path, aside / "router")
    running = tmp_path / f".router.new.{host}.{os.getpid()}.ghi"   # a save still running: left alone
    running.mkdir()
    with pytest.raises(CheckpointError, match=f"no saved router.*killed left the router it was replacing in {aside / 'router'}"):
        mr.MetaRouter.load(path)
    os.replace(aside / "router", path)                             # as the message says
    mr.MetaRouter.load(path)
    trained_router.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["router", running.name])


def test_training_checkpoints_drop_the_temporary_folder_of_a_killed_step(tmp_path):
    state = {"kernel": jnp.ones((3, 2))}
    ckpt = TrainCheckpointer(tmp_path / "ck", every=1)
    ckpt.save(1, state)
    ckpt.close()
    (tmp_path / "ck" / "7.orbax-checkpoint-tmp").mkdir()          # what a step killed mid-save leaves
    ckpt = TrainCheckpointer(tmp_path / "ck", every=1)
    assert ckpt.latest_step() == 1
    ckpt.save(2, state)                                            # removed (at the latest) by the next save
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["1", "2", checkpoint.FORMAT_FILE]
    ckpt.close()


def test_arrays_of_another_dtype_are_refused(tmp_path):
    """Restored arrays are compared with the template as saved: orbax, given a target, casts to the
    target's dtypes, which let a float32 checkpoint load as float16 or int32 without a word."""
    tree = {"w": np.full((3, 2), 1.1, np.float32), "b": np.zeros(2, np.float32)}
    checkpoint.save_tree(tmp_path / "t", tree, {})
    for other in ({"w": np.ones((3, 2), np.float16), "b": np.zeros(2, np.float32)},
                  {"w": np.ones((3, 2), np.float32), "b": np.zeros(2, np.int32)}):
        with pytest.raises(CheckpointError, match="expected (float16|int32)"):
            checkpoint.load_tree(tmp_path / "t", other)
    np.testing.assert_array_equal(checkpoint.load_tree(tmp_path / "t", tree)["w"], tree["w"])
    ckpt = TrainCheckpointer(tmp_path / "ck", every=1)
    ckpt.save(1, tree)
    with pytest.raises(CheckpointError, match="checkpoint step 1 .* expected float16"):
        ckpt.restore({"w": np.ones((3, 2), np.float16), "b": np.zeros(2, np.float32)})
    with pytest.raises(CheckpointError, match="holds 2 arrays, the model expects 3"):
        ckpt.restore({**tree, "c": np.zeros(1, np.float32)})
    ckpt.close()


def test_write_json_writes_strict_json(tmp_path):
    """NaN and infinities become null: other JSON readers refuse Python's NaN/Infinity tokens."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    checkpoint.write_json(tmp_path / "r.json", {"pr": float("nan"), "n": [np.float32("inf"), 0.5, np.float32(0.25)],
                                                "nested": ({"x": -float("inf")}, 3), "label": "known"})
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text, parse_constant=refuse) == {"pr": None, "n": [None, 0.5, 0.25],
                                                       "nested": [{"x": None}, 3], "label": "known"}
    assert not list(tmp_path.glob(".*.tmp"))


def change_one_value(folder: Path) -> None:
    """Store the orbax item under `folder` again with one number of its first array changed: arrays
    of the right shapes that read without complaint, but not those saved. (Flipping bytes in its
    files instead sometimes hits orbax's own index, which then fails to read: another refusal.)"""
    item = next(d for d in [folder, *sorted(folder.rglob("*"))] if d.is_dir() and (d / "_METADATA").is_file())
    with ocp.StandardCheckpointer() as ckpt:
        tree = ckpt.restore(item.absolute())
    first = sorted(tree)[0]
    value = np.array(tree[first])
    value.flat[0] += 1
    tree[first] = value
    shutil.rmtree(item)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(item.absolute(), tree)


def test_damaged_arrays_that_still_read_are_refused(trained_router, tmp_path):
    """A router and a training step record a digest of their arrays: changed arrays that orbax
    reads without complaint are refused, not loaded as another router."""
    trained_router.save(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "router.json").read_text())
    assert meta["arrays_sha256"] == checkpoint.stored_digest(checkpoint._to_storable(trained_router.params))
    change_one_value(tmp_path / "r" / "arrays")
    with pytest.raises(CheckpointError, match="damaged: their contents differ from what was saved"):
        mr.MetaRouter.load(tmp_path / "r")
    state = {"w": jnp.arange(4096.0).reshape(64, 64)}
    ckpt = TrainCheckpointer(tmp_path / "ck", every=1, keep=1)
    ckpt.save(1, state)
    ckpt.save(2, state)
    assert list(json.loads((tmp_path / "ck" / checkpoint.FORMAT_FILE).read_text())["digests"]) == ["2"]  # kept steps
    change_one_value(tmp_path / "ck" / "2")
    with pytest.raises(CheckpointError, match="step 2 .* damaged.*delete .*2 to resume from an earlier step"):
        ckpt.restore(state)
    ckpt.close()


def test_saving_over_a_router_keeps_what_is_beside_it(trained_router, tmp_path):
    """Files and folders a router directory holds beside router.json and arrays/ (an eval.json,
    notes, a .DS_Store, a link) survive saving a router over it; the router is the new one."""
    path = tmp_path / "r"
    trained_router.save(path)
    (path / "eval.json").write_text('{"a": 1}')
    (path / ".DS_Store").write_bytes(b"\0\1")
    (path / "notes").mkdir()
    (path / "notes" / "n.txt").write_text("kept")
    (path / "link").symlink_to("eval.json")
    meta = json.loads((path / "router.json").read_text())
    (path / "router.json").write_text(json.dumps({**meta, "old": True}))   # to tell the old router from the new
    trained_router.save(path)
    assert (path / "eval.json").read_text() == '{"a": 1}' and (path / ".DS_Store").read_bytes() == b"\0\1"
    assert (path / "notes" / "n.txt").read_text() == "kept" and os.readlink(path / "link") == "eval.json"
    assert "old" not in json.loads((path / "router.json").read_text())
    mr.MetaRouter.load(path)
    assert not [p for p in tmp_path.iterdir() if p.name != "r"]    # no temporary folder left


def test_a_run_of_before_a_field_existed_resumes_with_its_old_value(tmp_path):
    """A training directory whose recorded config lacks cost_units was trained with "all"
    (config.LEGACY_VALUES): it resumes with that setting, and is refused with today's default."""
    ckpt = TrainCheckpointer(tmp_path / "ck", every=1)
    ckpt.bind_run({"config": {"hidden": 64}, "key": [1, 2]})             # as a run of before recorded it
    ckpt.save(1, {"w": np.zeros(2, np.float32)})
    ckpt.close()
    again = TrainCheckpointer(tmp_path / "ck", every=1)
    again.bind_run({"config": {"hidden": 64, "cost_units": "all"}, "key": [1, 2]})
    with pytest.raises(CheckpointError, match="config.cost_units: 'all' saved, 'train' now"):
        again.bind_run({"config": {"hidden": 64, "cost_units": "train"}, "key": [1, 2]})
    again.close()
