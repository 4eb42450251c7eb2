"""Records into bytes: table, json, jsonl, csv, bodyfile, docker."""
