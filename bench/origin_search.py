"""The origin's search algorithm (part 4 of its series) as a script, for the cold-CLI baseline.

Usage: python bench/origin_search.py FEATURE_DIR MODEL.onnx IMAGE

Written for this benchmark from the article's description: load the ONNX model, embed the
photo (RGB, resize to 224x224 with Pillow's default filter, /255, NHWC), then for each shard
0000, 0001, ... until the first gap: load ids and features, Euclidean distance to every row
(the query tiled to the shard's shape, as the article does), the shard's top 10 by argsort;
finally the top 10 of all shards, printed as "OBJECT_ID DISTANCE".
"""

import pathlib
import sys

import numpy as np
import onnxruntime
import PIL.Image

LIMIT = 10


def main() -> None:
    feature_dir, model_path, image_path = (pathlib.Path(a) for a in sys.argv[1:4])
    session = onnxruntime.InferenceSession(str(model_path))
    image = PIL.Image.open(image_path).convert("RGB").resize((224, 224))
    pixels = np.array(image, dtype=np.float32) / 255
    query = session.run(["feature_vector"], {"inputs:0": np.expand_dims(pixels, 0)})[0][0]

    found = []
    number = 0
    while True:
        ids_path = feature_dir / f"{number:04d}.object_ids.npy"
        features_path = feature_dir / f"{number:04d}.features.npy"
        if not ids_path.exists():
            break
        ids = np.load(ids_path)
        features = np.load(features_path)
        assert len(ids) == len(features)
        distances = np.linalg.norm(np.tile(query, (len(features), 1)) - features, axis=1)
        top = np.argsort(distances)[:LIMIT]
        found.extend(zip(ids[top], distances[top], strict=False))
        number += 1
    for object_id, distance in sorted(found, key=lambda item: item[1])[:LIMIT]:
        print(f"{object_id} {distance}")


if __name__ == "__main__":
    main()
