import pyfacedlib as pfd


def test_build_info_reports_the_build():
    info = pfd.build_info()
    assert info["dlib_version"] == "20.0.1"
    assert isinstance(info["cuda"], bool)
    assert "OpenBLAS" in info["blas"], "dlib must be linked against a real BLAS"
    assert info["blas_threads"] >= 1
    for key in ("simd", "compiler", "cxx_flags"):
        assert info[key]
    assert "-O3" in info["cxx_flags"]


def test_model_paths_are_verified_files():
    for name in pfd.models.names():
        path = pfd.models.path(name)
        assert path.endswith(".dat")
    assert pfd.models.path("dlib_face_recognition_resnet_model_v1.dat") == pfd.models.path(
        "dlib_face_recognition_resnet_model_v1")
