"""ScanNet's 20 benchmark classes in DKNet's output order (SPEC §12). No torch import."""

CLASS_NAMES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)
NYU40_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
NUM_CLASSES = len(CLASS_NAMES)
# Class indices below this are "stuff" (wall, floor): never instances.
FIRST_OBJECT_CLASS = 2
# The official code marks an instance with no valid class by this index.
INVALID_CLASS = NUM_CLASSES
