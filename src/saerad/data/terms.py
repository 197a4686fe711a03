"""The terms each dataset's report text comes under, as a model card states them for the dictionary it quotes."""

from __future__ import annotations


def data_terms(dataset: str) -> str:
    """The card's data section: where the dictionary's sentences come from and under what terms."""
    if dataset.startswith("iu"):
        source = ("the Indiana University chest X-ray reports (Open-i), licensed CC BY-NC-ND 4.0: the descriptions "
                  "quote that report text, so this folder is for non-commercial use and its dictionary may not be "
                  "shared in modified form")
        if "phantom" in dataset:
            source += "; the images were drawn procedurally from each report's MeSH tags (no real radiographs)"
    elif dataset.startswith("mimic"):
        source = ("MIMIC-CXR reports, credentialed data under the PhysioNet Credentialed Health Data License 1.5.0: "
                  "share this folder only with people bound by that data use agreement")
    else:
        source = (f"the reports of `{dataset}`: their terms apply to `feature_dictionary.json`, which quotes them; "
                  "check them before sharing this folder")
    return ("The weights and the remote code are Apache-2.0. `feature_dictionary.json` holds sentences derived from "
            + source + ".")
