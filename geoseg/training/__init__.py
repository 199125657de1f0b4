"""Training's parts beside the loop (``geoseg/train.py``): the semi-supervised terms that learn from the
unlabelled pixels, and the classical pixel classifier every training is compared with. Each module
holds one part and is called from the loop; none of them drives training itself."""
