# Installing and packaging: the library, the CLI and the presets in a stable layout, a CMake
# package config for find_package(gpusleep), and the Python package. The wheel (pyproject.toml,
# scikit-build-core) installs the same layout inside the Python package:
#   PREFIX/lib/libgpusleep.so          the library (the CLI finds it at ../lib from its own path)
#   PREFIX/bin/gpusleep                the CLI
#   PREFIX/share/gpusleep/presets/     the presets (the CLI finds them at ../share/gpusleep/presets)
#   PREFIX/lib/cmake/gpusleep/         gpusleepConfig.cmake
# where PREFIX is CMAKE_INSTALL_PREFIX for `cmake --install`, and site-packages/gpusleep in a
# wheel. The rules for the library, the CLI and the presets are beside their targets.

include(CMakePackageConfigHelpers)

# Link libstdc++ and libgcc statically into the library and the CLI (their symbols stay hidden:
# the library exports only the CUDA symbols it hooks), so they need no GLIBCXX_ version of the
# machine they run on, only its glibc. The wheel is built so.
option(GPUSLEEP_STATIC_RUNTIME "Link libstdc++ and libgcc statically into the library and CLI" OFF)
if(GPUSLEEP_STATIC_RUNTIME)
  target_link_options(gpusleep PRIVATE -static-libstdc++ -static-libgcc)
  target_link_options(gpusleep_cli PRIVATE -static-libstdc++ -static-libgcc)
endif()

set(GPUSLEEP_INSTALL_LIBDIR lib)
set(GPUSLEEP_INSTALL_BINDIR bin)
set(GPUSLEEP_INSTALL_PRESETDIR share/gpusleep/presets)
set(GPUSLEEP_INSTALL_CMAKEDIR lib/cmake/gpusleep)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/gpusleepConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/gpusleepConfig.cmake
  INSTALL_DESTINATION ${GPUSLEEP_INSTALL_CMAKEDIR}
  PATH_VARS GPUSLEEP_INSTALL_LIBDIR GPUSLEEP_INSTALL_BINDIR GPUSLEEP_INSTALL_PRESETDIR)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/gpusleepConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/gpusleepConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/gpusleepConfigVersion.cmake
  DESTINATION ${GPUSLEEP_INSTALL_CMAKEDIR})

# The Python package, for `cmake --install` (a wheel carries it itself). It finds the library,
# the CLI and the presets of this prefix through the generated gpusleep/_install.py.
option(GPUSLEEP_INSTALL_PYTHON "Install the Python package gpusleep" ON)
if(GPUSLEEP_INSTALL_PYTHON AND NOT SKBUILD)
  if(NOT GPUSLEEP_PYTHON_INSTALL_DIR)
    find_package(Python3 QUIET COMPONENTS Interpreter)
    if(Python3_FOUND)
      set(pydir lib/python${Python3_VERSION_MAJOR}.${Python3_VERSION_MINOR}/site-packages)
    else()
      set(pydir lib/python3/site-packages)
    endif()
    set(GPUSLEEP_PYTHON_INSTALL_DIR ${pydir} CACHE STRING
      "Where `cmake --install` puts the Python package (relative: under the prefix)")
  endif()
  if(IS_ABSOLUTE "${GPUSLEEP_PYTHON_INSTALL_DIR}")
    file(RELATIVE_PATH prefix_from_package "${GPUSLEEP_PYTHON_INSTALL_DIR}/gpusleep"
      "${CMAKE_INSTALL_PREFIX}")
  else()
    string(REGEX REPLACE "[^/]+" ".." prefix_from_package "${GPUSLEEP_PYTHON_INSTALL_DIR}/x")
  endif()
  file(CONFIGURE OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/python/_install.py CONTENT
"\"\"\"Written by cmake --install: where this install's prefix is, from the package.\"\"\"
PREFIX_FROM_PACKAGE = \"${prefix_from_package}\"
")
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/control/python/gpusleep
    DESTINATION ${GPUSLEEP_PYTHON_INSTALL_DIR}
    PATTERN __pycache__ EXCLUDE PATTERN "*.pyc" EXCLUDE)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/python/_install.py
    DESTINATION ${GPUSLEEP_PYTHON_INSTALL_DIR}/gpusleep)
endif()
