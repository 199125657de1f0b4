"""The network and its bundle."""
