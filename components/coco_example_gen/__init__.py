"""CocoExampleGen: a TFX Beam component turning a COCO-format directory into Examples."""
from components.coco_example_gen.component import (  # noqa: F401
    CaptionVocabulary,
    CocoExampleGen,
    IngestReport,
)
