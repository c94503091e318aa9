SET LOCAL lock_timeout = '5s';
DROP TABLE document_chunks;
DROP TABLE documents;
