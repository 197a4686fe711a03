"""SAE-Rad Space: upload a chest X-ray, read a report whose every sentence links to its features."""

import os

from saerad.space import QUEUE_SIZE, build_demo

MODEL = os.environ.get("SAERAD_MODEL", "ORG/NAME")  # `saerad push --space-id` writes the model's repo id here

demo = build_demo(MODEL)

if __name__ == "__main__":
    demo.queue(max_size=QUEUE_SIZE).launch()
