"""Datasets: reading image folders, packing them into one HDF5 file, reading it back."""
