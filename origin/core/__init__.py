"""What the origin answers to a media request, decided once for every
transport: the request description (:mod:`.request`), the route class of a
path (:mod:`.routes`), the object chosen (:mod:`.answer`), validators and
ranges (:mod:`.validators`), the reply with its ordered head fields
(:mod:`.heads`), and origin-decided ABR's group manifests and decided
segments (:mod:`.decided`)."""
