"""ai-toolkit model subclasses for placeholder training, one module per family; ``AI_TOOLKIT_MODELS`` lists them."""

from .flux2_klein import Flux2Klein4BZeroPriorModel, Flux2Klein9BZeroPriorModel
from .qwen_image import QwenImageZeroPriorModel
from .qwen_image_edit_plus import QwenImageEditPlusZeroPriorModel
from .z_image import ZImageZeroPriorModel

AI_TOOLKIT_MODELS = [QwenImageZeroPriorModel, ZImageZeroPriorModel, QwenImageEditPlusZeroPriorModel,
                     Flux2Klein4BZeroPriorModel, Flux2Klein9BZeroPriorModel]
