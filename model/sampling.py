"""Token samplers, kept apart from the model and the decoding loop.

A sampler maps the (grammar-masked) next-token logits of a batch to one token per
row. The samplers differ in one method only, `select(logits, seed)`; temperature
scaling is shared. Randomness is stateless (`tf.random.stateless_*` with an explicit
`[2]` seed), so a given seed reproduces the same tokens in eager mode, inside a
`tf.function`, and in the exported SavedModel. The decoding loop derives a fresh
seed per step with `step_seed(seed, step)`.

Options may be Python numbers or scalar tensors: the exported signatures pass a
per-request temperature / top-p as tensors.
"""
import pix2seq  # noqa: F401  (Keras 3 guard)

import tensorflow as tf

# Logit given to tokens a grammar forbids. Finite, so softmax of a row never
# produces NaN; far enough below any real logit that it is never chosen.
MASKED_LOGIT = -1e9


def step_seed(seed, step):
    """A `[2]` int32 seed for decoding step `step`, derived from `seed` `[2]`."""
    seed = tf.cast(seed, tf.int32)
    step = tf.cast(step, tf.int32)
    return tf.stack([seed[0], seed[1] * 1000003 + step])


def mask_logits(logits, allowed):
    """Replace the logits of forbidden tokens. `allowed`: bool, broadcastable to `logits`."""
    logits = tf.cast(logits, tf.float32)
    return tf.where(allowed, logits, tf.constant(MASKED_LOGIT, tf.float32))


class Sampler:
    """Base class: scales by temperature, then `select`s a token per row.

    Args:
        temperature: float or scalar tensor > 0; logits are divided by it.
    """

    def __init__(self, temperature=1.0):
        self.temperature = temperature

    def __call__(self, logits, seed):
        """logits: float [B, V]; seed: int32 [2]. Returns int32 [B]."""
        logits = tf.cast(logits, tf.float32)
        temperature = tf.cast(self.temperature, tf.float32)
        return tf.cast(self.select(logits / temperature, seed), tf.int32)

    def select(self, logits, seed):
        raise NotImplementedError

    def get_config(self):
        return {"temperature": self.temperature}


class GreedySampler(Sampler):
    """The most likely token (temperature has no effect)."""

    def select(self, logits, seed):
        del seed
        return tf.argmax(logits, axis=-1, output_type=tf.int32)


class RandomSampler(Sampler):
    """Sample from the full (temperature-scaled) distribution."""

    def select(self, logits, seed):
        return tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int32)[:, 0]


class TopKSampler(Sampler):
    """Sample among the `k` most likely tokens."""

    def __init__(self, k=5, temperature=1.0):
        super().__init__(temperature)
        if isinstance(k, int) and k < 1:
            raise ValueError(f"TopKSampler needs k >= 1. Received: k={k}")
        self.k = k

    def select(self, logits, seed):
        top_logits, top_ids = tf.math.top_k(logits, k=self.k, sorted=False)
        choice = tf.random.stateless_categorical(top_logits, 1, seed, dtype=tf.int32)
        return tf.gather(top_ids, choice, batch_dims=1)[:, 0]

    def get_config(self):
        return {**super().get_config(), "k": self.k}


class TopPSampler(Sampler):
    """Nucleus sampling: sample among the most likely tokens up to mass `p`.

    rule="paper" (the default; the official pix2seq `top_logits`): sort the
    (temperature-scaled) logits, take the smallest logit among the tokens whose
    inclusive cumulative probability is <= p (the top logit when none is), and keep
    every token whose logit reaches it, so the most likely token is always kept and
    tokens tied with the threshold are kept too. p >= 1 keeps every token.

    rule="reach_p" (not the paper's; this project's rule before issue 13): keep the
    smallest prefix of sorted tokens whose mass reaches p. It keeps one more token
    than "paper" whenever the boundary token straddles p, so it samples more
    randomly at the same p.
    """

    RULES = ("paper", "reach_p")

    def __init__(self, p=0.4, temperature=1.0, rule="paper"):
        super().__init__(temperature)
        if isinstance(p, (int, float)) and not 0.0 < p <= 1.0:
            raise ValueError(f"TopPSampler needs 0 < p <= 1. Received: p={p}")
        if rule not in self.RULES:
            raise ValueError(f"TopPSampler rule must be one of {self.RULES}. Received: rule={rule!r}")
        self.p = p
        self.rule = rule

    def select(self, logits, seed):
        return tf.random.stateless_categorical(self.nucleus(logits), 1, seed, dtype=tf.int32)[:, 0]

    def nucleus(self, logits):
        """float [B, V] -> the same logits with those outside the nucleus masked."""
        p = tf.cast(self.p, tf.float32)
        sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")
        mass = tf.math.cumsum(tf.nn.softmax(sorted_logits, axis=-1), axis=-1,
                              exclusive=self.rule == "reach_p")
        inside = mass <= p if self.rule == "paper" else mass < p
        masked = tf.constant(MASKED_LOGIT, tf.float32)
        threshold = tf.reduce_min(tf.where(inside, sorted_logits, -masked), axis=-1, keepdims=True)
        threshold = tf.minimum(threshold, sorted_logits[:, :1])  # no token inside: keep the top one
        keep = (logits >= threshold) | (p >= 1.0)
        return tf.where(keep, logits, masked)

    def get_config(self):
        return {**super().get_config(), "p": self.p, "rule": self.rule}


_SAMPLERS = {
    "greedy": GreedySampler,
    "random": RandomSampler,
    "top_k": TopKSampler,
    "top_p": TopPSampler,
}


def get_sampler(name, **kwargs):
    """A sampler by name: greedy, random, top_k, top_p."""
    if name not in _SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; expected one of {sorted(_SAMPLERS)}.")
    return _SAMPLERS[name](**kwargs)
