"""Tasks beyond classification, built from the bundled digits, and transfer learning.

* `cnndsl.tasks.datasets`: deterministic localization, detection and segmentation canvases
  (`dataset localization_digits | detection_digits | segmentation_digits`).
* `cnndsl.tasks.boxes`: IoU, non-maximum suppression, average precision / mAP, mean IoU.
* `cnndsl.tasks.detection`: the YOLO-style grid target encoding and its decoding.
* `cnndsl.tasks.metrics`: the per-head metrics of the train section, computed at evaluation.
* `cnndsl.tasks.draw`: `cnndsl predict -o out.png` pictures (boxes, masks).
* `cnndsl.tasks.transfer`: `init from "weights"`, reports, frozen batchnorm statistics.

Imports nothing heavy: each module is imported where it is needed.
"""
