"""nbgrader's course directory: the repository root.

solutions/<assignment>/<notebook>.ipynb is nbgrader's source (instructor notebooks),
exercises/<assignment>/<notebook>.ipynb its release (what students get, committed).
The plain `nbgrader` commands work here; `dlcourse release` / `dlcourse grade` wrap them.
"""
c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.root = "."
c.CourseDirectory.course_id = "dlcourse"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.db_url = "sqlite:///gradebook.db"
# Student notebooks must not grow stale outputs or run forever under plain nbgrader.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ExecutePreprocessor.timeout = 120
c.Execute.timeout = 120
