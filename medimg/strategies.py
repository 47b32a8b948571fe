"""Problem 4.3's augmentation strategies as a table that needs no torch: the run planner
and the report read their names and descriptions from here; ``medimg.retina`` builds
the ``torchvision.transforms.v2`` pipelines from the same table.

Each strategy changes what the network sees in a way the training set does not already
hold: the course's set has every eye four times (as photographed, flipped left-right,
flipped top-bottom, and turned by a few degrees), so flips would add nothing new. Two
strategies move pixels (geometric), two change their values (photometric: what differs
between fundus cameras and visits). Geometric sizes are fractions of the image side, so
they move a 256-px and a 512-px image alike; the blur and the noise are in pixels."""

# name -> [(torchvision.transforms.v2 class name or one of medimg.retina's, its arguments)];
# "p": applied with that probability. The report's captions come from this table (``describe``).
# Rotation, scale, shear and shift; the image resampled bilinearly, the mask by nearest neighbour.
AFFINE = [("RandomAffine", {"degrees": 30, "translate": (0.05, 0.05), "scale": (0.85, 1.15), "shear": 5,
                            "interpolation": "bilinear"})]
# A smooth random displacement: control points an eighth of the side apart, each moved by a
# normal draw of 1.5% of the side per axis (about 4 px at 256 px), interpolated bicubically.
ELASTIC = [("SmoothElastic", {"displacement": 0.015, "spacing": 0.125})]
# Exposure and colour: brightness, contrast, saturation, hue, then a gamma curve.
COLOR = [("ColorJitter", {"brightness": 0.3, "contrast": 0.3, "saturation": 0.2, "hue": 0.02}),
         ("RandomGamma", {"gamma": (0.7, 1.5)})]
# The camera: uneven illumination (a smooth multiplicative field, log-normal with sd 0.15 at
# control points a quarter of the side apart), defocus blur (the kernel spans 3 sigma either
# side), sensor noise (normal, sd 0.02 of the range, per pixel and channel).
CAMERA = [("Illumination", {"strength": 0.15, "spacing": 0.25}),
          ("GaussianBlur", {"kernel_size": 11, "sigma": (0.1, 1.5), "p": 0.5}),
          ("Noise", {"sigma": 0.02, "p": 0.5})]
STRATEGIES = {"none": [], "affine": AFFINE, "elastic": ELASTIC, "color": COLOR, "camera": CAMERA,
              "combined": AFFINE + ELASTIC + COLOR + CAMERA}


def describe(name: str) -> str:
    """The strategy's transforms and parameters in words, e.g. for a caption."""
    if not STRATEGIES[name]:
        return "no augmentation"

    def value(v):
        if isinstance(v, str):
            return v
        if isinstance(v, tuple):  # a range, or one bound per axis when both are equal
            return f"{v[0]:g}" if len(set(v)) == 1 else "–".join(f"{x:g}" for x in v)
        return f"{v:g}"
    parts = []
    for class_name, kwargs in STRATEGIES[name]:
        p = kwargs.get("p")
        args = ", ".join(f"{k} {value(v)}" for k, v in kwargs.items() if k != "p")
        parts.append(f"{class_name}({args})" + (f" with probability {p:g}" if p is not None else ""))
    return "; ".join(parts)
