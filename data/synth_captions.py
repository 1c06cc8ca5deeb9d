"""Captions for a synthetic scene: several wordings, all true to the pixels.

Every fact a caption states is read from the drawn scene: counts and classes of
the non-crowd objects, their colour and size, where their visible pixels are,
which object is in front of which (its mask covers the other's), the
background texture, and whether a person's wrists are above the shoulders.
"""
import numpy as np

from data.synth_shapes import CATEGORY_NAMES, PERSON_ID, plural

NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
BACKGROUND_WORDS = {
    "gradient": "smooth gradient",
    "striped": "striped",
    "checkered": "checkered",
    "mottled": "mottled",
}
MIN_CAPTIONS = 3
MAX_CAPTIONS = 5


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def _number(n):
    return NUMBERS[n] if n < len(NUMBERS) else str(n)


class _Item:
    """What captions may say about one non-crowd object."""

    def __init__(self, obj, z, width, height):
        ys, xs = np.nonzero(obj.visible)
        self.obj, self.z = obj, z
        self.name = CATEGORY_NAMES[obj.category_id]
        self.colour, self.size = obj.colour, obj.size
        self.box = (xs.min() / width, ys.min() / height, (xs.max() + 1) / width, (ys.max() + 1) / height)
        self.cx, self.cy = xs.mean() / width, ys.mean() / height
        self.area = len(xs)

    def phrase(self, with_size=True):
        words = ([] if not with_size or self.size == "medium" else [self.size])
        if self.obj.category_id == PERSON_ID:
            words += ["person", "in", self.colour]
        else:
            words += [self.colour, self.name]
        return f"{_article(words[0])} {' '.join(words)}"

    def region(self):
        col = "left" if self.cx < 1 / 3 else "right" if self.cx > 2 / 3 else ""
        row = "top" if self.cy < 1 / 3 else "bottom" if self.cy > 2 / 3 else ""
        if row and col:
            return f"in the {row} {col} corner"
        if row:
            return f"at the {row}"
        if col:
            return f"on the {col} side"
        return "in the middle"


def _relation(a, b):
    """A true spatial relation 'a REL b', or None when none is clear."""
    if a.box[2] <= b.box[0]:
        return "to the left of"
    if b.box[2] <= a.box[0]:
        return "to the right of"
    if a.box[3] <= b.box[1]:
        return "above"
    if b.box[3] <= a.box[1]:
        return "below"
    if a.z > b.z and (a.obj.full & b.obj.full).any():
        return "in front of"
    if b.z > a.z and (a.obj.full & b.obj.full).any():
        return "partly behind"
    return None


def _groups(items):
    """'two red circles', 'a large blue square', ... grouped by colour and class."""
    groups = {}
    for it in items:
        groups.setdefault((it.colour, it.name, it.obj.category_id), []).append(it)
    out = []
    for (colour, name, cid), members in groups.items():
        if len(members) == 1:
            out.append(members[0].phrase())
        elif cid == PERSON_ID:
            out.append(f"{_number(len(members))} people in {colour}")
        else:
            out.append(f"{_number(len(members))} {colour} {plural(name)}")
    return out


def _join(parts):
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _counts(items):
    counts = {}
    for it in items:
        counts[it.name] = counts.get(it.name, 0) + 1
    return [f"{_number(n)} {name if n == 1 else plural(name)}" for name, n in counts.items()]


def _crowd_phrase(scene):
    crowds = [o for o in scene.objects if o.iscrowd]
    if not crowds:
        return None
    c = crowds[0]
    return f"a cluster of small {c.colour} {plural(CATEGORY_NAMES[c.category_id])}"


def _candidates(scene, rng):
    width, height = scene.width, scene.height
    items = [_Item(o, z, width, height) for z, o in enumerate(scene.objects) if not o.iscrowd]
    bg = BACKGROUND_WORDS[scene.background]
    crowd = _crowd_phrase(scene)
    out = []
    if not items:
        out += [f"An empty {bg} background.",
                f"There is nothing in this picture except a {bg} background.",
                f"A {bg} background with no shapes and no people on it."]
        if crowd:
            out = [f"{crowd.capitalize()} on a {bg} background.",
                   f"A {bg} background with {crowd} and nothing else.",
                   f"Apart from {crowd}, the {bg} background is empty."]
        return out
    listing = _groups(items) + ([crowd] if crowd else [])
    opener = ("A picture of", "An image showing", "A scene with", "This image contains")
    out.append(f"{opener[rng.integers(len(opener))]} {_join(listing)}.")
    noun = ("objects", "things", "items")[rng.integers(3)]
    n = len(items)
    extra = f", plus {crowd}" if crowd else ""
    if n == 1:
        out.append(f"There is only one {noun[:-1]} in the picture: {items[0].phrase()}{extra}.")
    else:
        out.append(f"There are {_number(n)} {noun} in the picture: {_join(_counts(items))}{extra}.")
    out.append(f"{_join(_counts(items)).capitalize()} on a {bg} background.")
    largest = max(items, key=lambda it: it.area)
    out.append(f"{largest.phrase().capitalize()} {largest.region()} of the image.")
    pairs = [(a, b, _relation(a, b)) for a in items for b in items if a is not b]
    pairs = [p for p in pairs if p[2]]
    if pairs:
        a, b, rel = pairs[rng.integers(len(pairs))]
        out.append(f"{a.phrase().capitalize()} {rel} {b.phrase(with_size=False)}.")
    people = [it for it in items if it.obj.category_id == PERSON_ID]
    if people:
        p = people[0]
        pose = ("with both arms raised", "with one arm raised", "with arms lowered")[2 - p.obj.arms_raised]
        others = [it for it in items if it is not p]
        tail = f", together with {_join(_groups(others))}" if others else ""
        out.append(f"{p.phrase(with_size=False).capitalize()} {pose}{tail}.")
    return out


def captions_for(scene, rng):
    """3-5 distinct captions of `scene`, wording varied by `rng`."""
    unique = list(dict.fromkeys(_candidates(scene, rng)))
    order = rng.permutation(len(unique))
    chosen = [unique[i] for i in order[:MAX_CAPTIONS]]
    if len(chosen) < MIN_CAPTIONS:
        raise RuntimeError(f"captions_for: only {len(chosen)} distinct captions")
    return chosen
