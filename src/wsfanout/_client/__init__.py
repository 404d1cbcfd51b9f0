"""The Python client of the wsfanout protocol (face: ``wsfanout.client``)."""
