"""The labeler and the report metrics in files that import nothing from saerad (stdlib, numpy, nltk, their siblings):
the toolkit imports them, and `saerad push --metrics` ships the same files in every metric Space."""
