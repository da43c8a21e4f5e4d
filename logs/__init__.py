"""Parse the authors' MATLAB training diaries and checkpoint ``stats`` into tables."""
