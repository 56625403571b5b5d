"""The aiohttp origin that CDNs and browser players pull from."""
