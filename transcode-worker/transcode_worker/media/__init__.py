"""Media functions of the transcode worker: ladder, one-pass HLS, early publishing, images, remux; no broker."""
