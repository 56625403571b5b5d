"""Decode once, encode an AAC/Opus/FLAC ladder, cut CMAF segments, write HLS and DASH."""
