"""``cadenza live``: ingest a live input and package it as it arrives (LL-HLS, LL-DASH)."""
