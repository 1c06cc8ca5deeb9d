"""TFX Trainer module: `run_fn(fn_args)` only; the work is `train_data.train_on_examples`.

`custom_config` is `model.train_config.to_custom_config(TrainConfig)` (the pipeline
adds `code_fingerprint`, the hash of the training code it was built with, which
keys the cache); steps come from TrainArgs / EvalArgs. Checkpoints and TensorBoard
logs go under `fn_args.model_run_dir`; the serving SavedModel (model/export.py, the
signatures of the tasks trained) into `fn_args.serving_model_dir`.
"""
import pix2seq  # noqa: F401  (Keras 3 guard)


def run_fn(fn_args):
    """TFX Trainer calls this."""
    from model import train_data
    from model.export import export_saved_model
    from model.train_config import from_custom_config

    import tensorflow as tf

    config = from_custom_config(fn_args.custom_config, fn_args.train_steps, fn_args.eval_steps or 0)
    # TFX passes split patterns (`.../Split-train/*`); tf.data wants file names.
    train_files = sorted(f for p in fn_args.train_files for f in tf.io.gfile.glob(p))
    eval_files = sorted(f for p in fn_args.eval_files for f in tf.io.gfile.glob(p))
    examples = train_data.examples_root(fn_args.train_files[0])
    result = train_data.train_on_examples(config, examples, fn_args.model_run_dir, train_files, eval_files)
    export_saved_model(result.model, fn_args.serving_model_dir, train_data.caption_model_file(examples),
                       tasks=result.tasks)
