"""Small inputs for the demo and the tests, and the script that makes them."""
