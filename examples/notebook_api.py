"""The Python API in a notebook's order: open a mosaic lazily, crop it, segment, count areas, draw the map.

    python examples/notebook_api.py [MODEL] [MOSAIC] [OUT_DIR]

Defaults: ``demo_output/model`` and ``demo_output/plot_a/survey_ortho.tif`` (run ``make demo`` first),
output in ``api_example/``. The ``# %%`` lines are cells: Jupyter (with jupytext) or VS Code open this file
as a notebook. Writes the crop's class map (GeoTIFF), its areas per class (CSV) and a figure (PNG).
"""

# %% Imports and paths
from __future__ import annotations

import sys
import threading
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import rioxarray
from matplotlib.colors import ListedColormap

import geoseg

args = sys.argv[1:]
model_path = Path(args[0] if len(args) > 0 else "demo_output/model")
mosaic_path = Path(args[1] if len(args) > 1 else "demo_output/plot_a/survey_ortho.tif")
out = Path(args[2] if len(args) > 2 else "api_example")
out.mkdir(parents=True, exist_ok=True)

# %% Load the model once; open the mosaic lazily (Dask chunks: nothing is read yet)
model = geoseg.load_model(model_path)
mosaic = rioxarray.open_rasterio(mosaic_path, chunks={"x": 1024, "y": 1024})
print(f"{mosaic_path.name}: {mosaic.sizes['x']} × {mosaic.sizes['y']} px, {mosaic.sizes['band']} bands, "
      f"classes {[c.name for c in model.classes]}")  # fmt: skip

# %% Crop to the central half: xarray slicing keeps the coordinates and the CRS
height, width = mosaic.sizes["y"], mosaic.sizes["x"]
crop = mosaic.isel(y=slice(height // 4, 3 * height // 4), x=slice(width // 4, 3 * width // 4))

# %% Segment: lazy too; it runs chunk by chunk when written or computed
classes = geoseg.segment(crop, model)
classes.rio.to_raster(out / "crop_classes.tif", tiled=True, lock=threading.Lock(), recalc_transform=False)
class_map = np.asarray(classes.values)

# %% Area per class: pixels × the pixel's area (the CRS's units squared; m² for projected CRSs)
pixel_area = abs(crop.rio.resolution()[0] * crop.rio.resolution()[1])
valid = class_map != 255
rows = []
for spec in model.classes:
    pixels = int((class_map == spec.id).sum())
    rows.append({"class": spec.name, "pixels": pixels, "area": pixels * pixel_area,
                 "share_%": 100 * pixels / max(int(valid.sum()), 1)})  # fmt: skip
areas = pd.DataFrame(rows)
areas.to_csv(out / "crop_areas.csv", index=False)
print(areas.to_string(index=False))

# %% A figure: the crop beside its class map, in the bundle's colours
ids = [c.id for c in model.classes]
lookup = np.full(256, len(ids), dtype=np.int16)  # nodata → an extra, white entry
lookup[ids] = np.arange(len(ids))
colours = ListedColormap([c.color for c in model.classes] + ["#ffffff"])
rgb = np.moveaxis(np.asarray(crop.isel(band=slice(0, 3)).values), 0, -1).astype(np.float32)
rgb = rgb if rgb.shape[-1] == 3 else rgb[..., 0]  # one or two bands: the first, in grey
figure, (left, right) = plt.subplots(1, 2, figsize=(10, 5))
left.imshow(np.clip(rgb / max(float(np.percentile(rgb, 99)), 1e-6), 0, 1), cmap="gray")
left.set_title("mosaic (crop)")
right.imshow(lookup[class_map], cmap=colours, vmin=0, vmax=len(ids), interpolation="nearest")
right.set_title("geoseg classes")
for axis in (left, right):
    axis.set_axis_off()
handles = [plt.Rectangle((0, 0), 1, 1, color=c.color) for c in model.classes]
figure.legend(handles, [c.name for c in model.classes], loc="lower center", ncol=len(ids))
figure.savefig(out / "crop_classes.png", dpi=100, bbox_inches="tight")
print(f"wrote {out / 'crop_classes.tif'}, {out / 'crop_areas.csv'} and {out / 'crop_classes.png'}")
