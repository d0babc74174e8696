"""Summary statistics of lensing images (`lens stats`): ring, background, light moments.

measures.py  pure numpy statistics of one image and a vectorised batch version
load.py      images by class from a folder of .npy files or a packed HDF5 file
summary.py   mean ± std per class and overall, comparison of two sets, text and JSON
montage.py   a PNG of random images per class (matplotlib, Agg)
"""
