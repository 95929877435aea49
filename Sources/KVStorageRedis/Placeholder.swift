import KVStorage
