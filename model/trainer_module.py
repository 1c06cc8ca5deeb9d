"""TFX Trainer module: `run_fn(fn_args)` only; the work is model/training.py's `train`.

`custom_config` keys (pipeline/presets.py `TrainConfig.custom_config()`):
`model_preset`, `model_overrides`, `batch_size`, `learning_rate`, `warmup_steps`,
`weight_decay`, `task_weights`, `seed`; optional `mixing` ("batch" | "data"),
`precision`, `tpu`, `checkpoint_every`, `clipnorm`, `task_batch_sizes` ({task: global
batch} for batch mixing, overriding `batch_size` per task). Steps come from TrainArgs /
EvalArgs. Checkpoints and TensorBoard logs go under `fn_args.model_run_dir`; the
serving SavedModel (model/export.py) into `fn_args.serving_model_dir`.
"""
import pix2seq  # noqa: F401  (Keras 3 guard)


def run_fn(fn_args):
    """TFX Trainer calls this."""
    from model import train_data
    from model.export import export_saved_model
    from model.pix2seq_model import DEFAULT_TASK_WEIGHTS
    from model.training import TrainConfig, train

    import tensorflow as tf

    config = dict(fn_args.custom_config or {})
    # TFX passes split patterns (`.../Split-train/*`); tf.data wants file names.
    train_files = sorted(f for p in fn_args.train_files for f in tf.io.gfile.glob(p))
    eval_files = sorted(f for p in fn_args.eval_files for f in tf.io.gfile.glob(p))
    examples = train_data.examples_root(fn_args.train_files[0])
    # No `task_weights`: the paper's, for the tasks the data supports; given ones must be fed.
    given = {t: float(w) for t, w in (config.get("task_weights") or {}).items()}
    weights = train_data.task_weights_for(examples, given or dict(DEFAULT_TASK_WEIGHTS), list(given))
    model_config = train_data.model_config_for(
        config.get("model_preset", "tiny"), examples, **dict(config.get("model_overrides") or {})
    )
    batch_size = int(config.get("batch_size", 8))
    seed = int(config.get("seed", 0))
    eval_steps = int(fn_args.eval_steps or 0)
    settings = TrainConfig(
        steps=int(fn_args.train_steps),
        batch_size=batch_size,
        learning_rate=float(config.get("learning_rate", 1e-3)),
        warmup_steps=config.get("warmup_steps"),
        weight_decay=float(config.get("weight_decay", 0.05)),
        global_clipnorm=config.get("clipnorm", 1.0),
        task_weights=weights,
        checkpoint_every=int(config.get("checkpoint_every", 500)),
        eval_steps=eval_steps,
        seed=seed,
        precision=config.get("precision", "auto"),
        tpu=config.get("tpu"),
    )
    result = train(
        model_config,
        settings,
        fn_args.model_run_dir,
        train_data.train_dataset_fn(
            train_files, model_config.tokens, _train_batch_size(config, batch_size, weights), weights,
            config.get("mixing", "batch"), seed
        ),
        train_data.eval_dataset_fn(eval_files, model_config.tokens, batch_size, list(weights))
        if eval_steps
        else None,
        verbose=2,
    )
    export_saved_model(result.model, fn_args.serving_model_dir, train_data.caption_model_file(examples))


def _train_batch_size(config, batch_size, weights):
    """`batch_size`, or {task: size} when `task_batch_sizes` is set (batch mixing)."""
    per_task = dict(config.get("task_batch_sizes") or {})
    if not per_task:
        return batch_size
    if config.get("mixing", "batch") != "batch":
        raise ValueError("custom_config task_batch_sizes needs mixing='batch'")
    return {t: int(per_task.get(t, batch_size)) for t in weights}
