"""Until `saerad demo` lands: build a tiny random SAE-Rad model, save it, and run `saerad report` on one image.

The weights are random, so the report shows the plumbing (features -> sentences -> provenance), not medicine.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from configuration_saerad import SAERadConfig
from modeling_saerad import SAERadModel


def main() -> None:
    torch.manual_seed(0)
    config = SAERadConfig(
        vision_config={"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "intermediate_size": 64, "patch_size": 8, "image_size": 64},
        sae_architecture="topk", expansion_factor=2, k=4,
    )
    model = SAERadModel(config)
    model.load_feature_dictionary({"schema_version": 1, "features": [
        {"id": i, "description": f"Placeholder description of feature {i}.", "section": "other", "findings": []}
        for i in range(config.d_sae)]})
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(Path(tmp) / "model")
        image = Path(tmp) / "image.png"
        Image.fromarray((np.random.default_rng(0).random((128, 128)) * 255).astype(np.uint8)).save(image)
        subprocess.run([sys.executable, "-m", "saerad", "report", str(image), "--model", str(Path(tmp) / "model"),
                        "--json"], check=True)


if __name__ == "__main__":
    main()
