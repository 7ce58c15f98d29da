"""What a network is worth, and the rules that keep the figures honest: the one selection rule
(`selection`), the only door to the test set (`holdout`), a file's verification (`verify`) and
its two-part code (`twopart`)."""
