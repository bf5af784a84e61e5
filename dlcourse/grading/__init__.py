"""The course directory, nbgrader wrappers, the student self-check and the autograder."""
