"""Ship an image by digest: publish, the records stored with it, provenance and signatures, the gates, and the
tag moves (promote, rollback) under the tag's lock and history. Imports neither gracectl.releases nor
gracectl.image: it works on digests and records, whatever built them."""
