"""``magnet_decode``: encoded PNG/JPEG bytes -> H x W x 3 uint8 RGB, the first step of the ``magnet`` ensemble."""

from __future__ import annotations

import json
import logging
from typing import Any

from magnet_triton import io_spec
from magnet_triton.errors import MagnetError
from magnet_triton.imageio import align_pillow_guard, decode_image
from magnet_triton.model_repository.config_params import model_parameters
from magnet_triton.model_repository.responses import respond_to_each
from magnet_triton.request_options import check_request_parameters

log = logging.getLogger(__name__)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb_utils = pb_utils
        params = model_parameters(args)
        # The pipeline's limit and default, so both steps of the ensemble refuse the same images.
        self.max_image_pixels = int(
            params.get(io_spec.MAX_IMAGE_PIXELS_PARAMETER, io_spec.DEFAULT_MAX_IMAGE_PIXELS)
        )
        # This process decodes for this model alone, so Pillow's process-wide bomb guard can follow
        # the config instead of cutting a larger configured limit short at its own 179 MP.
        align_pillow_guard(self.max_image_pixels)
        self.model_name = args.get("model_name", io_spec.DECODE_MODEL)  # a preset prefix included

    def _decode(self, request: Any) -> Any:
        pb = self.pb_utils
        # The ensemble hands every step the request's parameters: a misspelled one is refused here, at
        # once, rather than after the request waited its turn in the pipeline's queue.
        check_request_parameters(json.loads(request.parameters() or "{}"))
        tensor = pb.get_input_tensor_by_name(request, io_spec.IMAGE_BYTES)
        if tensor is None:
            raise MagnetError(f"{self.model_name} needs the {io_spec.IMAGE_BYTES} input (one encoded image)")
        data = tensor.as_numpy()
        if data.size != 1:
            raise MagnetError(f"{io_spec.IMAGE_BYTES} must hold one encoded image, got {data.size} elements")
        encoded = data.reshape(-1)[0]
        if not isinstance(encoded, bytes):
            encoded = bytes(encoded)
        image = decode_image(
            encoded, source=f"the {io_spec.IMAGE_BYTES} input", max_pixels=self.max_image_pixels
        )
        return pb.InferenceResponse(output_tensors=[pb.Tensor(io_spec.IMAGE, image)])

    def execute(self, requests: list[Any]) -> list[Any]:
        return respond_to_each(requests, self._decode, self.pb_utils, self.model_name, log)
