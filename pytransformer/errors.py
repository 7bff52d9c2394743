"""Exception types raised by pytransformer."""


class WeightsError(ValueError):
    """A model directory, its config.json or its safetensors file is missing, malformed or
    inconsistent. The message names the file and the tensor or config key at fault.

    It derives from ValueError so that callers catching bad input generically still see it.
    """
