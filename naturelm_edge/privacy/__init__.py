"""The privacy filter's export side: the speech model a bundle carries (the device side is
``edge_runtime.speech``; site rules are ``edge_runtime.site``)."""
