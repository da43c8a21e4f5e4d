"""MAT files in and out: v5/v7 through scipy, v7.3 through h5py, one plain-tree convention.

``load_mat`` reads any version into dicts, lists and MATLAB-ordered numpy arrays;
``save_mat`` writes such a tree back (v5 or v7.3).
"""
