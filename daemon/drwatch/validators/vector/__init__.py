"""Validator family ``vector``: ``vector_restore`` drills for pgvector and Pinecone."""
