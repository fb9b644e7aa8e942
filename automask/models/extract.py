"""Rebuilds the files in this folder from the mediapipe 0.10.21 wheel on PyPI.

    python automask/models/extract.py            # downloads the wheel with pip (no install)
    python automask/models/extract.py WHEEL      # or uses a wheel you already have

Current mediapipe wheels ship no models; 0.10.21 carried these Apache-2.0 files
under mediapipe/modules/.  The hand landmarker's .task is a plain zip of the
palm detector and the landmark model under the names the Tasks API expects;
it is written with fixed timestamps so that it is the same bytes every time.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).parent
WHEEL_SPEC = "mediapipe==0.10.21"
FACE = {
    "face_detection_short_range.tflite": "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "face_detection_full_range_sparse.tflite":
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    # 468 face landmarks on a 192² face crop: the face's oval and its parts.  Run through OpenVINO's
    # TFLite reader (the Tasks API wants metadata this file lacks).
    "face_landmark.tflite": "mediapipe/modules/face_landmark/face_landmark.tflite",
}
# A person's pose (BlazePose): the detector finds people, the landmark model their 33 body points, wrists and
# finger bases among them — where a person's hands are, however little of them the palm detector sees.  Run through
# OpenVINO's TFLite reader (no Tasks metadata) by automask/pose.py.
POSE = {
    "pose_detection.tflite": "mediapipe/modules/pose_detection/pose_detection.tflite",
    "pose_landmark_full.tflite": "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
}
HAND_TASK = "hand_landmarker.task"
HAND_PARTS = {
    "hand_detector.tflite": "mediapipe/modules/palm_detection/palm_detection_full.tflite",
    "hand_landmarks_detector.tflite": "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
}


def fetch_wheel(dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "-d", str(dest),
                    WHEEL_SPEC], check=True)
    return next(dest.glob("mediapipe-0.10.21-*.whl"))


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(argv[0]) if argv else fetch_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as whl:
            for name, member in {**FACE, **POSE}.items():
                (HERE / name).write_bytes(whl.read(member))
            with zipfile.ZipFile(HERE / HAND_TASK, "w", compression=zipfile.ZIP_STORED) as task:
                for name, member in HAND_PARTS.items():
                    info = zipfile.ZipInfo(name, date_time=(2025, 1, 31, 0, 0, 0))
                    task.writestr(info, whl.read(member))
        lines = [f"Source wheel: {wheel.name} (sha256 {hashlib.sha256(wheel.read_bytes()).hexdigest()})"]
    for name in [*FACE, *POSE, HAND_TASK]:
        lines.append(f"{hashlib.sha256((HERE / name).read_bytes()).hexdigest()}  {name}")
    with zipfile.ZipFile(HERE / HAND_TASK) as task:
        for name in HAND_PARTS:
            lines.append(f"{hashlib.sha256(task.read(name)).hexdigest()}  {HAND_TASK}!{name}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
