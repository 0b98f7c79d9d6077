"""Work that outgrows one machine, on Ray (the ``cluster`` extra; the device never imports it)."""
