"""Expected library messages are dropped where they arise; anything else still shows."""

import logging

import synthaug  # noqa: F401  (installs the filters)

REPORT = (
    "\x1b[1mViTForImageClassification LOAD REPORT\x1b[0m from: /models/vit\n"
    "Key                 | Status     | \n"
    "--------------------+------------+-\n"
    "pooler.dense.bias   | \x1b[38;5;208mUNEXPECTED\x1b[0m | \n"
    "classifier.bias     | \x1b[31mMISSING\x1b[0m    | \n"
    "classifier.weight   | MISSING    | \n"
)


def test_expected_messages_are_dropped_and_others_kept(caplog) -> None:
    caplog.set_level(logging.WARNING)
    models = logging.getLogger("transformers.modeling_utils")
    models.warning(REPORT)  # a new classification head: expected
    surprising = REPORT.replace("pooler.dense.bias", "encoder.layer.0.attention.query.weight")
    models.warning(surprising)  # a backbone weight not loaded: shown
    imports = logging.getLogger("transformers.utils.import_utils")
    imports.warning(
        "`CLIPImageProcessor` requires torchvision (not installed); falling back to "
        "`CLIPImageProcessorPil` for backward compatibility."
    )
    imports.warning("`Foo` requires bar")
    peft = logging.getLogger("diffusers.loaders.peft")
    peft.warning("No LoRA keys associated to CLIPTextModel found with the prefix='text_encoder'.")
    peft.warning("No LoRA keys associated to FluxTransformer2DModel found with the prefix='x'.")
    shown = [record.getMessage() for record in caplog.records]
    assert shown == [
        surprising,
        "`Foo` requires bar",
        "No LoRA keys associated to FluxTransformer2DModel found with the prefix='x'.",
    ]
