"""The emulator's tag vocabulary: names, categories and popularity, deterministic from a seed.

A booru vocabulary is long-tailed: a few hundred general tags cover most occurrences and
thousands more appear a handful of times. We build one with word lists and a Zipf law, plus
a few dozen *visual* general tags that the image renderer draws (see render.py), so a model
trained on the emulator's world has something real to learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GENERAL, ARTIST, COPYRIGHT, CHARACTER, META = 0, 1, 3, 4, 5
CATEGORY_NAMES = {GENERAL: "general", ARTIST: "artist", COPYRIGHT: "copyright",
                  CHARACTER: "character", META: "meta"}

# Visual tags, grouped by what the renderer varies. Every post has exactly one background
# colour, at most one pattern, one to three shape kinds and one count tag.
BACKGROUND_COLOURS = {
    "white_background": (250, 250, 250), "black_background": (15, 15, 15),
    "grey_background": (128, 128, 128), "blue_background": (40, 80, 220),
    "red_background": (210, 40, 40), "green_background": (40, 170, 60),
    "yellow_background": (240, 220, 40), "pink_background": (250, 150, 200),
    "purple_background": (130, 50, 180), "orange_background": (250, 140, 20),
}
BACKGROUND_PATTERNS = ["striped_background", "polka_dot_background", "checkered_background",
                       "gradient_background", "grid_background"]
SHAPES = ["circle", "star_(symbol)", "heart", "triangle", "square", "crescent", "cross",
          "diamond_(shape)"]
COUNT_TAGS = ["single_object", "two_objects", "many_objects"]
EXTRA_VISUAL = ["border", "monochrome"]
VISUAL_TAGS = (list(BACKGROUND_COLOURS) + BACKGROUND_PATTERNS + SHAPES + COUNT_TAGS
               + EXTRA_VISUAL)

# Real meta tags; `highres`/`absurdres` follow the image size, the rest are drawn at random.
SIZE_META = ["highres", "absurdres", "lowres"]
RANDOM_META = ["commentary_request", "commentary", "translated", "translation_request",
               "english_commentary", "check_commentary", "bad_id", "bad_pixiv_id",
               "official_art", "scan", "duplicate", "md5_mismatch", "paid_reward_available",
               "revision", "artist_request", "source_request", "tagme", "animated", "video",
               "non-web_source", "third-party_edit", "image_sample", "web_sample"]

# Names real boorus have that break naive parsers: quotes, ampersands, emoticons, slashes.
AWKWARD_GENERAL = [":d", ":3", ">_<", "^_^", "o_o", "d:", ";)", "jack-o'-lantern",
                   "black_&_white", "\\m/", "/\\/\\/\\", "+_+", "<3", "@_@", "x_x",
                   "light_o'_lantern", "rock_'n'_roll", "tom_&_jerry_(style)", "!?", "..."]

_SYLLABLES = ["ka", "ki", "ku", "ke", "ko", "sa", "shi", "su", "se", "so", "ta", "chi", "tsu",
              "te", "to", "na", "ni", "nu", "ne", "no", "ha", "hi", "fu", "he", "ho", "ma",
              "mi", "mu", "me", "mo", "ya", "yu", "yo", "ra", "ri", "ru", "re", "ro", "wa",
              "n", "ga", "gi", "go", "za", "ji", "zu", "da", "de", "do", "ba", "bi", "bo"]
_ADJECTIVES = ["long", "short", "blue", "red", "black", "white", "brown", "blonde", "green",
               "purple", "pink", "grey", "silver", "orange", "open", "closed", "large", "small",
               "striped", "frilled", "wide", "hair", "bare", "holding", "looking", "sitting",
               "standing", "upper", "lower", "multicolored", "sleeveless", "pleated", "fur",
               "ribbon", "plaid", "see-through", "torn", "wet", "floating", "crossed"]
_NOUNS = ["hair", "eyes", "skirt", "dress", "shirt", "sleeves", "gloves", "hat", "ribbon",
          "bow", "thighhighs", "shoes", "boots", "jacket", "mouth", "smile", "blush", "tail",
          "ears", "wings", "horns", "flower", "sword", "book", "cup", "umbrella", "window",
          "sky", "cloud", "tree", "water", "bag", "scarf", "collar", "necktie", "apron",
          "hairband", "glasses", "earrings", "choker", "legwear", "bangs", "braid", "ponytail"]


@dataclass(frozen=True)
class Vocabulary:
    """All tags of a world. Index i is the tag's id minus one (tag ids start at 1)."""

    names: list[str]
    categories: np.ndarray          # int8 per tag
    weights: np.ndarray             # popularity within its category (sums to 1 per category)
    copyright_of: np.ndarray        # for characters: index of their copyright tag, else -1
    by_name: dict[str, int]

    def index(self, name: str) -> int | None:
        return self.by_name.get(name)

    def of_category(self, category: int) -> np.ndarray:
        return np.flatnonzero(self.categories == category)


def _words(rng: np.random.Generator, low: int, high: int) -> str:
    return "".join(rng.choice(_SYLLABLES, size=int(rng.integers(low, high + 1))))


def build_vocabulary(seed: int, n_general: int = 4500, n_character: int = 1400,
                     n_copyright: int = 300, n_artist: int = 1800) -> Vocabulary:
    """Build a deterministic vocabulary of ~8,000 tags (always well over 5,000)."""
    rng = np.random.default_rng([seed, 1])
    seen: set[str] = set()
    names: list[str] = []
    cats: list[int] = []
    copyright_of: list[int] = []

    def add(name: str, cat: int, parent: int = -1) -> int:
        while name in seen:
            name += "_"
        seen.add(name)
        names.append(name)
        cats.append(cat)
        copyright_of.append(parent)
        return len(names) - 1

    for name in VISUAL_TAGS + AWKWARD_GENERAL:
        add(name, GENERAL)
    while cats.count(GENERAL) < n_general:
        if rng.random() < 0.7:
            name = f"{rng.choice(_ADJECTIVES)}_{rng.choice(_NOUNS)}"
            if name in seen:
                name = f"{rng.choice(_ADJECTIVES)}_{name}"
        else:
            name = f"{_words(rng, 2, 4)}_{rng.choice(_NOUNS)}"
        add(name, GENERAL)
    copyrights = [add("original", COPYRIGHT)]
    copyrights += [add(f"{_words(rng, 2, 4)}_{_words(rng, 2, 3)}", COPYRIGHT)
                   for _ in range(n_copyright - 1)]
    copyright_weights = _zipf(len(copyrights), 1.1)
    for _ in range(n_character):
        parent = copyrights[int(rng.choice(len(copyrights), p=copyright_weights))]
        base = f"{_words(rng, 2, 3)}_{_words(rng, 2, 4)}"
        name = f"{base}_({names[parent]})" if rng.random() < 0.35 else base
        add(name, CHARACTER, parent)
    for _ in range(n_artist):
        add(_words(rng, 2, 5) + (f"_{_words(rng, 1, 2)}" if rng.random() < 0.3 else ""), ARTIST)
    for name in SIZE_META + RANDOM_META:
        add(name, META)

    categories = np.array(cats, dtype=np.int8)
    weights = np.zeros(len(names))
    for cat in CATEGORY_NAMES:
        idx = np.flatnonzero(categories == cat)
        order = rng.permutation(len(idx))
        weights[idx] = _zipf(len(idx), 1.05)[order]
    # Visual tags are drawn by the renderer's own rules, never by popularity.
    weights[: len(VISUAL_TAGS)] = 0.0
    gen = categories == GENERAL
    weights[gen] /= weights[gen].sum()
    return Vocabulary(names=names, categories=categories, weights=weights,
                      copyright_of=np.array(copyright_of, dtype=np.int32),
                      by_name={n: i for i, n in enumerate(names)})


def _zipf(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()
