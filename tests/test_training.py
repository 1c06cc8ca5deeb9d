"""Training: loss weighting, AdamW exclusions and schedule, strategies, NaN guard, exact resume."""
import os
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from model import losses, strategy as strategy_lib
from model.optimizer import FusedAdamW, WarmupLinearDecay, build_optimizer, no_decay_variables
from model.pix2seq_model import Pix2SeqModel
from model.training import NonFiniteLossError, TrainConfig, train
from model.tasks import seq_len
from training_utils import global_batch, micro_config, random_dataset_fn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_weighted_xent_is_token_weighted_mean():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype("float32")
    targets = rng.integers(0, 7, (2, 5)).astype("int32")
    weights = rng.random((2, 5)).astype("float32")
    weights[1, 3:] = 0.0
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    xent = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    expected = (weights * xent).sum() / weights.sum()
    assert float(losses.weighted_xent(targets, logits, weights)) == pytest.approx(expected, rel=1e-5)
    # Zero-weight tokens do not matter, whatever their logits.
    logits[1, 3:] = 100.0 * rng.normal(size=(2, 7))
    assert float(losses.weighted_xent(targets, logits, weights)) == pytest.approx(expected, rel=1e-5)
    assert float(losses.weighted_xent(targets, logits, np.zeros_like(weights))) == 0.0


def test_task_weights_scale_the_total_and_data_mixing_reports_per_task():
    config = micro_config(dropout=0.0, drop_path=0.0)
    keras.utils.set_random_seed(0)
    model = Pix2SeqModel(config, task_weights={"detection": 2.0, "captioning": 0.5})
    model.build()
    batch = {k: {n: v.numpy() for n, v in b.items()} for k, b in global_batch(config, ["detection", "captioning"], 0, 2).items()}
    total, parts = model.compute_task_losses(batch)
    per_task = {t: float(n / d) for t, (n, d) in parts.items()}
    assert float(total) == pytest.approx(2.0 * per_task["detection"] + 0.5 * per_task["captioning"], rel=1e-5)
    # Data mixing: the same sequences padded into one batch with task ids.
    length = max(seq_len(t, config.tokens) for t in ("detection", "captioning"))
    mixed = {"image": np.concatenate([batch["detection"]["image"], batch["captioning"]["image"]])}
    for key in ("input_tokens", "target_tokens", "token_weights"):
        rows = [np.pad(batch[t][key], ((0, 0), (0, length - batch[t][key].shape[1]))) for t in ("detection", "captioning")]
        mixed[key] = np.concatenate(rows)
    mixed["task_id"] = np.array([0, 0, 3, 3], "int32")
    total_mixed, parts_mixed = model.compute_task_losses(mixed)
    for task in ("detection", "captioning"):
        n, d = parts_mixed[task]
        assert float(n / d) == pytest.approx(per_task[task], rel=1e-4)
    n_all = sum(float(parts[t][0]) for t in parts)
    d_all = sum(float(parts[t][1]) for t in parts)
    assert float(total_mixed) == pytest.approx(n_all / d_all, rel=1e-4)
    assert float(parts_mixed["segmentation"][1]) == 0.0


def test_adamw_decays_only_weight_matrices():
    config = micro_config()
    model = Pix2SeqModel(config)
    model.build()
    excluded = {id(v) for v in no_decay_variables(model)}
    for v in model.trainable_variables:
        is_embedding = "embedding" in v.path and "patch" not in v.path
        assert (id(v) in excluded) == (len(v.shape) < 2 or is_embedding), v.path
    optimizer = build_optimizer(model, learning_rate=0.1, total_steps=10, warmup_steps=0, weight_decay=0.05)
    before = [v.numpy().copy() for v in model.trainable_variables]
    lr = float(optimizer.learning_rate)  # the step-0 rate, used by the first update
    # Zero gradients: Adam's update is 0, so only decoupled weight decay moves variables.
    optimizer.apply([tf.zeros_like(v) for v in model.trainable_variables], model.trainable_variables)
    for v, old in zip(model.trainable_variables, before):
        expected = old if id(v) in excluded else old * (1 - 0.05 * lr)
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, atol=1e-7, err_msg=v.path)
    assert any(id(v) not in excluded for v in model.trainable_variables)


def test_fused_adamw_equals_keras_adamw():
    """ResourceApplyAdam-based updates == Keras' AdamW (decay exclusions included), in and out of tf.function."""
    rng = np.random.default_rng(0)
    shapes = [(4, 3), (3,), (5, 2)]
    inits = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[rng.normal(size=s).astype("float32") for s in shapes] for _ in range(4)]
    results = []
    for cls in (keras.optimizers.AdamW, FusedAdamW):
        variables = [keras.Variable(x) for x in inits]
        opt = cls(learning_rate=WarmupLinearDecay(0.1, 1, 4), weight_decay=0.05, beta_1=0.9, beta_2=0.95)
        opt.exclude_from_weight_decay(var_list=[variables[1]])
        opt.build(variables)
        step = tf.function(lambda g: opt.apply(g, variables))
        for i, g in enumerate(grads):
            g = [tf.constant(x) for x in g]
            if i % 2:
                opt.apply(g, variables)  # eager
            else:
                step(g)
        results.append([v.numpy() for v in variables] + [s.numpy() for s in opt.variables])
    for want, got in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_schedule_warms_up_then_decays_to_one_percent():
    schedule = WarmupLinearDecay(1.0, warmup_steps=10, total_steps=110)
    rates = np.array([float(schedule(s)) for s in range(0, 120)])
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[10] == pytest.approx(1.0) and rates[60] == pytest.approx(0.505)
    assert rates[110] == pytest.approx(0.01) and rates[119] == pytest.approx(0.01)
    assert np.all(np.diff(rates[:10]) > 0) and np.all(np.diff(rates[10:111]) < 0)
    assert WarmupLinearDecay.from_config(schedule.get_config()).get_config() == schedule.get_config()


def test_unreachable_tpu_falls_back_quickly(caplog):
    start = time.monotonic()
    with caplog.at_level("WARNING"):
        strategy = strategy_lib.create_strategy(tpu="grpc://10.255.255.1:8470", probe_timeout_s=1.0)
    assert time.monotonic() - start < 10
    assert not strategy_lib.is_tpu(strategy)
    assert "unreachable" in caplog.text and "falling back" in caplog.text
    assert strategy_lib.precision_policy(strategy) == "float32"
    assert strategy_lib.precision_policy(strategy, "mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="precision"):
        strategy_lib.precision_policy(strategy, "fp8")


def test_tpu_probe_recognizes_a_tensorflow_worker():
    server = tf.distribute.Server.create_local_server()
    assert strategy_lib._reachable(server.target, 5.0)
    assert not strategy_lib._reachable("grpc://127.0.0.1:1", 1.0)


@pytest.mark.slow
def test_non_finite_loss_stops_training(tmp_path):
    config = micro_config()
    good = random_dataset_fn(config, ["detection"], 2)

    def poisoned(ctx, start):
        return good(ctx, start).map(
            lambda b: {"detection": dict(b["detection"], image=b["detection"]["image"] * np.nan)}
        )

    with pytest.raises(NonFiniteLossError, match="Non-finite training loss nan at step 1"):
        train(config, TrainConfig(steps=4, checkpoint_every=2, batch_size=2), str(tmp_path), poisoned, verbose=0)
    assert not tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_step):
        super().__init__()
        self.at_step = at_step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.at_step:
            raise KeyboardInterrupt("simulated preemption")


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(tmp_path):
    """4 steps in one go == 2 steps, crash at step 3, resume from the step-2 checkpoint, reach 4.

    Dropout and drop-path are on, so this also checks that RNG states and the
    input position are restored, not just weights and optimizer slots.
    """
    config = micro_config(dropout=0.1, drop_path=0.1)
    tasks = ["detection", "captioning"]
    data = random_dataset_fn(config, tasks, 2)
    settings = TrainConfig(steps=4, checkpoint_every=2, batch_size=2, learning_rate=1e-3, warmup_steps=1)
    whole = train(config, settings, str(tmp_path / "whole"), data, verbose=0).model
    with pytest.raises(KeyboardInterrupt):
        train(config, settings, str(tmp_path / "resumed"), data, verbose=0, callbacks=[_Interrupt(3)])
    resumed = train(config, settings, str(tmp_path / "resumed"), data, verbose=0)
    assert resumed.initial_step == 2
    assert int(resumed.model.optimizer.iterations) == 4
    for a, b in zip(whole.weights, resumed.model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, err_msg=a.path)
    for a, b in zip(whole.optimizer.variables, resumed.model.optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, err_msg=a.path)
    assert os.path.exists(tmp_path / "resumed" / "tensorboard")
    assert os.path.exists(tmp_path / "resumed" / "model.weights.h5")


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import sys, json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, "tests")
    import numpy as np
    from model.training import TrainConfig, train
    from training_utils import micro_config, random_dataset_fn
    config = micro_config(dropout=0.0, drop_path=0.0)
    data = random_dataset_fn(config, ["detection", "captioning"], 4)
    settings = TrainConfig(steps=1, checkpoint_every=1, batch_size=4, learning_rate=1e-3, warmup_steps=0)
    out = {}
    for name, devices in (("default", None), ("mirrored", ["/cpu:0", "/cpu:1"])):
        strategy = tf.distribute.MirroredStrategy(devices) if devices else tf.distribute.get_strategy()
        result = train(config, settings, sys.argv[1] + "/" + name, data, strategy=strategy, verbose=0)
        out[name] = {"replicas": strategy.num_replicas_in_sync, "loss": result.history["loss"][0],
                     "task_losses": [result.history[k][0] for k in ("detection_loss", "captioning_loss")],
                     "weights": [w.numpy().tolist() for w in result.model.weights]}
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_mirrored_two_cpus_matches_default_strategy(tmp_path):
    """One step on 2 logical CPUs (batch split 2 + 2) == one step on one device (batch 4)."""
    import json

    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    default, mirrored = out["default"], out["mirrored"]
    assert (default["replicas"], mirrored["replicas"]) == (1, 2)
    assert mirrored["loss"] == pytest.approx(default["loss"], abs=1e-5)
    np.testing.assert_allclose(mirrored["task_losses"], default["task_losses"], atol=1e-5)
    for a, b in zip(default["weights"], mirrored["weights"]):
        np.testing.assert_allclose(np.array(b), np.array(a), atol=1e-5)
