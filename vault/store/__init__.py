"""Storage: the database engine, the models, sealed records and the blind search index."""
