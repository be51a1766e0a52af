//! Pinecone.
