"""A user's op module, as a job's ``plugins: [tests.user_op_plugin]`` names it: importing it
registers ``brighten`` (tests/test_registry.py)."""
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import augengine


class BrightenParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Grey levels added to every pixel (the result clipped to [0, 255]).
    offset: int = Field(ge=-255, le=255)


@augengine.register_op("brighten", params=BrightenParams)
def brighten(image, offset):
    """``image + offset`` clipped to uint8, NumPy or CuPy alike."""
    return (image.astype(np.int16) + offset).clip(0, 255).astype(np.uint8)
