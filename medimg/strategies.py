"""Problem 4.3's augmentation strategies as a table that needs no torch: the run planner
and the report read their names and descriptions from here; ``medimg.retina`` builds
the ``torchvision.transforms.v2`` pipelines from the same table."""

# Problem 4.3's strategies: name -> [(torchvision.transforms.v2 class name, its arguments)].
# The report's captions are generated from this table (``describe``), so they cannot drift.
FLIP = [("RandomHorizontalFlip", {}), ("RandomVerticalFlip", {})]
AFFINE = [("RandomAffine", {"degrees": 30, "translate": (0.05, 0.05), "scale": (0.85, 1.15), "shear": 5})]
COLOR = [("ColorJitter", {"brightness": 0.3, "contrast": 0.3, "saturation": 0.2, "hue": 0.02}),
         ("GaussianBlur", {"kernel_size": 5, "sigma": (0.1, 1.0), "p": 0.3})]
# A smooth random field moving pixels by about 3 px on average (up to ~10 px), whatever the
# image size. (torchvision's ElasticTransform at its default alpha 50 moves them by 1 px, nearly
# the identity, and blurs a full-size noise field with a dense kernel: 1.4 s per 512-px image
# at a 3-px strength on one core, where interpolating a coarse field takes milliseconds.)
ELASTIC = [("SmoothElastic", {"displacement": 3.0, "spacing": 32})]
STRATEGIES = {"none": [], "flip": FLIP, "affine": AFFINE, "color": COLOR, "elastic": ELASTIC,
              "combined": FLIP + AFFINE + COLOR}


def describe(name: str) -> str:
    """The strategy's transforms and parameters in words, e.g. for a caption."""
    if not STRATEGIES[name]:
        return "no augmentation"

    def value(v):
        if isinstance(v, tuple):  # a range, or one bound per axis when both are equal
            return f"{v[0]:g}" if len(set(v)) == 1 else "–".join(f"{x:g}" for x in v)
        return f"{v:g}"
    parts = []
    for class_name, kwargs in STRATEGIES[name]:
        p = kwargs.get("p")
        args = ", ".join(f"{k} {value(v)}" for k, v in kwargs.items() if k != "p")
        parts.append(f"{class_name}({args})" + (f" with probability {p:g}" if p is not None else ""))
    return "; ".join(parts)
