# The _core extension module: pybind11 bindings (bind_*.cpp, array_args.cpp) over pfd_engine.
# Included by CMakeLists.txt, after the engine was either defined (one build folder) or imported
# from PYFACEDLIB_ENGINE_DIR (wheel builds); the pfd_engine_* variables describe that engine.
pybind11_add_module(_core MODULE
  cpp/array_args.cpp
  cpp/bind_module.cpp
  cpp/bind_inference.cpp
  cpp/bind_alignment.cpp
  cpp/bind_conversion.cpp
  cpp/bind_clustering.cpp
  cpp/bind_training.cpp
)
target_include_directories(_core PRIVATE cpp)
target_link_libraries(_core PRIVATE pfd::pfd_engine)
target_link_options(_core PRIVATE "-Wl,--exclude-libs,ALL")
# The wheel places scipy_openblas32/ beside pyfacedlib/; pyfacedlib/__init__.py also preloads
# the library by path, which covers in-place developer builds.
set_target_properties(_core PROPERTIES
  OUTPUT_NAME "${PFD_MODULE_NAME}"
  BUILD_WITH_INSTALL_RPATH ON
  INSTALL_RPATH "${pfd_engine_rpath}")
target_compile_definitions(_core PRIVATE
  PFD_DLIB_VERSION="${pfd_engine_dlib_version}"
  PFD_CXX_FLAGS="${pfd_engine_cxx_flags}"
  PFD_SIMD="${pfd_engine_simd}"
  PFD_CUDA_REASON="${pfd_engine_cuda_reason}"
  PFD_MODULE_NAME=${PFD_MODULE_NAME}
  PFD_COMPILER="${pfd_engine_compiler}")
install(TARGETS _core LIBRARY DESTINATION pyfacedlib)
