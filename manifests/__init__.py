"""Pure presentation model with HLS and DASH renderers and parsers. No I/O."""
